"""POPGym's card-memory tasks: RepeatFirst, RepeatPrevious, Autoencode, CountRecall.

Definitions follow the ``popgym`` package (Morad et al., ICLR 2023; popgym 1.0.7,
``popgym/envs/{repeat_first,repeat_previous,autoencode,count_recall}.py`` and
``popgym/core/deck.py``). A deck of ``52 * num_decks`` cards, card ``i`` of the ordered deck
having suit ``i % 4``, rank ``(i % 52) // 4`` and colour ``i % 2``, is shuffled uniformly at
reset and dealt one card at a time. Discrete observations are one-hot (gymnasium's ``flatten``
of POPGym's spaces); each task scales its rewards so an episode's return lies in [-1, 1]. The
deck running out ends an episode with ``terminated`` (the game is over, nothing to bootstrap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqrl.envs.popgym.base import PopGymEnvironment, one_hot
from seqrl.envs.spaces import Box, Discrete

DECK_SIZE = 52
NUM_SUITS = 4
DISTINCT_VALUES = {"colors": 2, "suits": 4, "ranks": 13}


def card_values(num_decks: int, kind: str = "suits") -> np.ndarray:
    """The ``kind`` ("colors", "suits" or "ranks") of every card of POPGym's ordered deck."""
    i = np.arange(DECK_SIZE * num_decks)
    values = {"colors": i % 2, "suits": i % NUM_SUITS, "ranks": (i % DECK_SIZE) // NUM_SUITS}
    return values[kind].astype(np.int32)


def shuffled(key: jax.Array, num_decks: int, kind: str = "suits") -> jax.Array:
    """The values of the cards in the order they are dealt (a uniformly shuffled deck)."""
    return jax.random.permutation(key, jnp.asarray(card_values(num_decks, kind)))


def _check_num_decks(num_decks: int) -> None:
    if int(num_decks) < 1:
        raise ValueError(f"num_decks must be a positive integer, got {num_decks}")


@struct.dataclass
class DeckState:
    cards: jax.Array  # [num_cards] suit of each card, in dealing order
    time: jax.Array  # steps taken in this episode


def _suit_space() -> Box:
    return Box.make(0.0, 1.0, (NUM_SUITS,))


# --------------------------------------------------------------------------------------------
# RepeatFirst, RepeatPrevious
# --------------------------------------------------------------------------------------------


class _SuitDeck(PopGymEnvironment):
    """Shared by the games that deal one card per step and observe its suit."""

    def reset(self, key, params):
        state = DeckState(shuffled(key, params.num_decks), jnp.zeros((), jnp.int32))
        return one_hot(state.cards[0], NUM_SUITS), state

    def _deal(self, state: DeckState, reward: jax.Array, n: int):
        """Deals the next card: the step's six outputs; the deck is empty after N - 1 steps."""
        time = state.time + 1
        obs = one_hot(state.cards[jnp.minimum(time, n - 1)], NUM_SUITS)
        terminated = time >= n - 1
        reward = reward.astype(jnp.float32)
        return obs, DeckState(state.cards, time), reward, terminated, jnp.zeros((), bool), {}

    def observation_space(self, params) -> Box:
        return _suit_space()

    def action_space(self, params) -> Discrete:
        return Discrete(NUM_SUITS)


@struct.dataclass
class RepeatFirstParams:
    num_decks: int = struct.field(pytree_node=False, default=1)


class RepeatFirst(_SuitDeck):
    """Repeat the suit of the first card at every step.

    Observation: the one-hot suit of the card just dealt (the first card at reset). Action: a
    suit. Reward: ``+1/(N - 1)`` when the action is the first card's suit, else ``-1/(N - 1)``
    (``N = 52 * num_decks``). The episode terminates after ``N - 1`` steps (the deck is empty).
    """

    def __init__(self, num_decks: int = 1, name: str | None = None):
        _check_num_decks(num_decks)
        super().__init__(RepeatFirstParams(num_decks=int(num_decks)), name)

    def step(self, key, state, action, params):
        n = DECK_SIZE * params.num_decks
        scale = 1.0 / (n - 1)
        return self._deal(state, jnp.where(action == state.cards[0], scale, -scale), n)


# --------------------------------------------------------------------------------------------
# RepeatPrevious
# --------------------------------------------------------------------------------------------


@struct.dataclass
class RepeatPreviousParams:
    num_decks: int = struct.field(pytree_node=False, default=1)
    k: int = 4


class RepeatPrevious(_SuitDeck):
    """Repeat the suit of the card dealt ``k - 1`` cards before the newest one.

    Observation: the one-hot suit of the card just dealt. At step ``t`` (1-based) the agent has
    seen ``t`` cards ``o_0 .. o_{t-1}``; POPGym scores the action against the ``k``-th newest card
    of that hand, ``o_{t-k}`` (``k = 1`` would be the newest card itself). The first ``k - 1``
    steps are unscored (reward 0); the other ``N - k`` score ``+-1/(N - k)``, so a perfect
    return is 1. The episode terminates after ``N - 1`` steps.
    """

    def __init__(self, num_decks: int = 1, k: int = 4, name: str | None = None):
        _check_num_decks(num_decks)
        if not 1 <= int(k) < DECK_SIZE * int(num_decks):
            raise ValueError(f"k must be in [1, {DECK_SIZE * int(num_decks)}), got {k}")
        super().__init__(RepeatPreviousParams(num_decks=int(num_decks), k=int(k)), name)

    def step(self, key, state, action, params):
        n = DECK_SIZE * params.num_decks
        hand = state.time + 1  # cards seen so far
        target = state.cards[jnp.maximum(hand - params.k, 0)]
        scale = 1.0 / (n - params.k)
        reward = jnp.where(action == target, scale, -scale)
        return self._deal(state, jnp.where(hand >= params.k, reward, 0.0), n)


# --------------------------------------------------------------------------------------------
# Autoencode
# --------------------------------------------------------------------------------------------

PLAY, WATCH = 0, 1  # POPGym's Mode enum


@struct.dataclass
class AutoencodeParams:
    num_decks: int = struct.field(pytree_node=False, default=1)


class Autoencode(PopGymEnvironment):
    """Watch the whole deck, then recite its suits in reverse order.

    Observation: ``[one-hot mode (PLAY=0, WATCH=1), one-hot suit]`` (6 numbers). Reset shows the
    first card in WATCH mode; each of the next ``N - 1`` steps deals one more card (reward 0,
    action ignored), the last of them already in PLAY mode. Then ``N`` PLAY steps score the
    action against the cards newest-first with ``+-1/N`` and observe ``(PLAY, suit 0)``. The
    episode terminates after ``2N - 1`` steps.
    """

    def __init__(self, num_decks: int = 1, name: str | None = None):
        _check_num_decks(num_decks)
        super().__init__(AutoencodeParams(num_decks=int(num_decks)), name)

    def reset(self, key, params):
        state = DeckState(shuffled(key, params.num_decks), jnp.zeros((), jnp.int32))
        return self._obs(jnp.asarray(WATCH), state.cards[0]), state

    def step(self, key, state, action, params):
        n = DECK_SIZE * params.num_decks
        watching = state.time < n - 1
        recited = state.time - (n - 1)  # cards recited before this step (during PLAY)
        target = state.cards[jnp.clip(n - 1 - recited, 0, n - 1)]
        reward = jnp.where(action == target, 1.0 / n, -1.0 / n)
        reward = jnp.where(watching, 0.0, reward).astype(jnp.float32)
        time = state.time + 1
        mode = jnp.where(time < n - 1, WATCH, PLAY)
        suit = jnp.where(watching, state.cards[jnp.minimum(time, n - 1)], 0)
        terminated = time >= 2 * n - 1
        obs = self._obs(mode, suit)
        return obs, DeckState(state.cards, time), reward, terminated, jnp.zeros((), bool), {}

    def _obs(self, mode, suit):
        return jnp.concatenate([one_hot(mode, 2), one_hot(suit, NUM_SUITS)])

    def observation_space(self, params) -> Box:
        return Box.make(0.0, 1.0, (2 + NUM_SUITS,))

    def action_space(self, params) -> Discrete:
        return Discrete(NUM_SUITS)


# --------------------------------------------------------------------------------------------
# CountRecall
# --------------------------------------------------------------------------------------------


@struct.dataclass
class CountRecallParams:
    num_decks: int = struct.field(pytree_node=False, default=1)
    deck_type: str = struct.field(pytree_node=False, default="colors")


@struct.dataclass
class CountRecallState:
    values: jax.Array  # [N] value of each dealt card (the value deck, in dealing order)
    queries: jax.Array  # [N] value queried at each step (an independently shuffled deck)
    counts: jax.Array  # [distinct values] how often each value has been dealt so far
    time: jax.Array


class CountRecall(PopGymEnvironment):
    """Answer how many cards of the queried value have been dealt so far.

    Two decks of ``N = 52 * num_decks`` cards are shuffled independently: a value deck and a
    query deck; cards are compared by ``deck_type`` (colors: 2 values, suits: 4, ranks: 13).
    Observation: ``[one-hot dealt value, one-hot queried value]``. The action at step ``t`` is
    scored against the number of dealt values (``o_0 .. o_{t-1}``, the newest included) equal to
    the query shown with ``o_{t-1}``: ``+-1/(N - 1)``. Actions are counts ``0 .. N / values``. The
    episode terminates after ``N - 1`` steps.
    """

    def __init__(self, num_decks: int = 1, deck_type: str = "colors", name: str | None = None):
        _check_num_decks(num_decks)
        if deck_type not in DISTINCT_VALUES:
            raise ValueError(f"deck_type must be one of {list(DISTINCT_VALUES)}, got {deck_type!r}")
        super().__init__(CountRecallParams(num_decks=int(num_decks), deck_type=deck_type), name)

    def reset(self, key, params):
        key_values, key_queries = jax.random.split(key)
        values = shuffled(key_values, params.num_decks, params.deck_type)
        queries = shuffled(key_queries, params.num_decks, params.deck_type)
        d = DISTINCT_VALUES[params.deck_type]
        counts = jnp.zeros((d,), jnp.int32).at[values[0]].add(1)
        state = CountRecallState(values, queries, counts, jnp.zeros((), jnp.int32))
        return self._obs(values[0], queries[0], d), state

    def step(self, key, state, action, params):
        n = DECK_SIZE * params.num_decks
        d = DISTINCT_VALUES[params.deck_type]
        answer = state.counts[state.queries[state.time]]
        scale = 1.0 / (n - 1)
        reward = jnp.where(action == answer, scale, -scale).astype(jnp.float32)
        time = state.time + 1
        dealt = jnp.minimum(time, n - 1)
        value, query = state.values[dealt], state.queries[dealt]
        counts = state.counts.at[value].add(1)
        state = CountRecallState(state.values, state.queries, counts, time)
        terminated = time >= n - 1
        return self._obs(value, query, d), state, reward, terminated, jnp.zeros((), bool), {}

    def _obs(self, value, query, d):
        return jnp.concatenate([one_hot(value, d), one_hot(query, d)])

    def observation_space(self, params) -> Box:
        return Box.make(0.0, 1.0, (2 * DISTINCT_VALUES[params.deck_type],))

    def action_space(self, params) -> Discrete:
        n = DECK_SIZE * params.num_decks
        return Discrete(n // DISTINCT_VALUES[params.deck_type] + 1)
