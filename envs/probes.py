"""Probe environments: tiny tasks whose best return is known, for checking that an agent learns
what defines it (memory, return conditioning, continuous control) in seconds.

A failing probe points at one part of an agent: a recurrent torso that cannot pass one step of
memory forward, a Decision Transformer that does not read its return-to-go or its states, a
continuous action head that cannot concentrate its density. Returns are scaled so that the best
policy scores 1 (``Recall``, ``MatchCue``) or 0 (``Target``); each docstring gives the return of
a uniformly random policy and of the best policy without memory.

- ``probe/Recall-v0``: name the symbol shown now AND the one shown ``delay`` steps ago.
- ``probe/MatchCue-v0``: name the symbol shown now; the return counts the steps named right, so
  any return from 0 to the episode length can be asked for.
- ``probe/Target-v0``: one step; the action should land on the target the observation shows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.core import Environment
from seqrl.envs.spaces import Box, Discrete
from seqrl.errors import UserError


def _positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"env_kwargs.{name} must be an integer >= {low}, got {value!r}")
    return value


@struct.dataclass
class ProbeParams:
    length: int = 8  # steps per episode; the last one terminates it (no time limit to cut)


@struct.dataclass
class CueState:
    symbols: jax.Array  # [delay + 1] the last delay + 1 symbols, newest last
    time: jax.Array


class _Cues(Environment):
    """A fresh uniformly random symbol (one-hot) every step; episodes of a fixed length end by
    termination (nothing follows the last step)."""

    def __init__(self, num_symbols: int, length: int, memory: int):
        self.num_symbols = _positive_int("num_symbols", num_symbols, 2)
        self.length = _positive_int("length", length)
        self.memory = memory  # how many past symbols the state keeps

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(length=self.length)

    def _draw(self, key):
        return jax.random.randint(key, (), 0, self.num_symbols, jnp.int32)

    def reset(self, key, params):
        symbols = jnp.zeros(self.memory + 1, jnp.int32).at[-1].set(self._draw(key))
        state = CueState(symbols, jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def _obs(self, state):
        return jax.nn.one_hot(state.symbols[-1], self.num_symbols, dtype=jnp.float32)

    def _advance(self, key, state, params):
        symbols = jnp.concatenate([state.symbols[1:], self._draw(key)[None]])
        state = CueState(symbols, state.time + 1)
        terminated = state.time >= params.length
        return self._obs(state), state, terminated

    def observation_space(self, params) -> Box:
        return Box.make(0.0, 1.0, (self.num_symbols,))


class Recall(_Cues):
    """Each step shows a random symbol out of ``num_symbols``; the action names two symbols,
    ``action = now * num_symbols + then``: the one shown now and the one shown ``delay`` steps
    ago. Each part named right pays ``0.5 / length`` (the ``then`` part is paid for free during
    the first ``delay`` steps, when nothing that old exists), so the best return is 1.

    With 2 symbols, length 8 and delay 1: memory reaches 1.0, the best memoryless policy
    0.5 + 0.5 (1 + 7 / 2) / 8 = 0.78 (it names ``now`` right and guesses ``then``), uniformly
    random actions 0.25 + 0.28 = 0.53.
    """

    def __init__(self, num_symbols: int = 2, length: int = 8, delay: int = 1):
        super().__init__(num_symbols, length, _positive_int("delay", delay))
        self.delay = delay

    def step(self, key, state, action, params):
        n = self.num_symbols
        now, then = action // n, action % n
        recalled = jnp.where(state.time >= self.delay, then == state.symbols[0], True)
        reward = 0.5 * ((now == state.symbols[-1]) + recalled.astype(jnp.float32)) / self.length
        obs, state, terminated = self._advance(key, state, params)
        return obs, state, reward.astype(jnp.float32), terminated, jnp.zeros((), bool), {}

    def action_space(self, params) -> Discrete:
        return Discrete(self.num_symbols**2)


class MatchCue(_Cues):
    """Each step shows a random symbol out of ``num_symbols``; naming it pays 1, anything else
    0. The return is the number of steps named right, 0 to ``length``: the task a return-
    conditioned agent must hit on demand (target R: name exactly R symbols right). Uniformly
    random actions return ``length / num_symbols``."""

    def __init__(self, num_symbols: int = 2, length: int = 10):
        super().__init__(num_symbols, length, 0)

    def step(self, key, state, action, params):
        reward = (action == state.symbols[-1]).astype(jnp.float32)
        obs, state, terminated = self._advance(key, state, params)
        return obs, state, reward, terminated, jnp.zeros((), bool), {}

    def action_space(self, params) -> Discrete:
        return Discrete(self.num_symbols)


@struct.dataclass
class TargetState:
    target: jax.Array


class Target(Environment):
    """One step: the observation is a target uniform in ``[-0.8, 0.8]^dims``, the action lies
    in ``[-1, 1]^dims`` and pays ``-mean((action - target)^2)``. The best return is 0;
    uniformly random actions return -(1/3 + 0.8^2/3) = -0.55 on average."""

    def __init__(self, dims: int = 1):
        self.dims = _positive_int("dims", dims)

    @property
    def default_params(self):
        return ProbeParams(length=1)

    def reset(self, key, params):
        state = TargetState(jax.random.uniform(key, (self.dims,), minval=-0.8, maxval=0.8))
        return state.target, state

    def step(self, key, state, action, params):
        reward = -jnp.mean((action - state.target) ** 2)
        terminated = jnp.ones((), bool)  # AutoReset draws the next target
        return state.target, state, reward.astype(jnp.float32), terminated, jnp.zeros((), bool), {}

    def observation_space(self, params) -> Box:
        return Box.make(-0.8, 0.8, (self.dims,))

    def action_space(self, params) -> Box:
        return Box.make(-1.0, 1.0, (self.dims,))


PROBES = {"Recall-v0": Recall, "MatchCue-v0": MatchCue, "Target-v0": Target}
