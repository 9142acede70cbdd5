"""POPGym tasks: hand-checked rewards, episode lengths, spaces, noise, the previous-action wrapper.

Episodes are played from Python with one jitted ``step`` per env (a compile each, cached here),
so scripted policies can read the observations like an agent would.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqrl.envs as envs
from seqrl.envs.popgym import PreviousActionObservation
from seqrl.envs.popgym.minesweeper import MineSweeperState, neighbour_counts

TASKS = [
    "RepeatFirst",
    "RepeatPrevious",
    "Autoencode",
    "CountRecall",
    "StatelessCartPole",
    "NoisyStatelessCartPole",
    "MineSweeper",
]
DIFFICULTIES = ["Easy", "Medium", "Hard"]

# name -> (observation size, number of actions), from POPGym's spaces one-hot flattened.
SPACES = {
    **{f"RepeatFirst{d}": (4, 4) for d in DIFFICULTIES},
    **{f"RepeatPrevious{d}": (4, 4) for d in DIFFICULTIES},
    **{f"Autoencode{d}": (6, 4) for d in DIFFICULTIES},
    "CountRecallEasy": (4, 27),  # 2 colours; counts 0..26
    "CountRecallMedium": (8, 27),  # 4 suits, 2 decks; counts 0..26
    "CountRecallHard": (26, 17),  # 13 ranks, 4 decks; counts 0..16
    **{f"StatelessCartPole{d}": (2, 2) for d in DIFFICULTIES},
    **{f"NoisyStatelessCartPole{d}": (2, 2) for d in DIFFICULTIES},
    "MineSweeperEasy": (3, 16),
    "MineSweeperMedium": (7, 36),
    "MineSweeperHard": (10, 64),
}

# Card games: episode length per difficulty (N - 1, or 2N - 1 for Autoencode; N = 52 * decks).
CARD_EPISODES = {
    "RepeatFirstEasy": 51,
    "RepeatFirstMedium": 8 * 52 - 1,
    "RepeatFirstHard": 16 * 52 - 1,
    "RepeatPreviousEasy": 51,
    "RepeatPreviousMedium": 103,
    "RepeatPreviousHard": 155,
    "AutoencodeEasy": 103,
    "AutoencodeMedium": 207,
    "AutoencodeHard": 311,
    "CountRecallEasy": 51,
    "CountRecallMedium": 103,
    "CountRecallHard": 207,
}


@functools.cache
def _compiled(name: str, previous_action: bool = False):
    env = envs.make_raw(f"popgym/{name}", previous_action=previous_action)
    return env, jax.jit(env.reset), jax.jit(env.step)


class Episode(NamedTuple):
    obs: np.ndarray  # o_0 .. o_T
    rewards: np.ndarray  # r_1 .. r_T
    terminated: np.ndarray
    truncated: np.ndarray
    state: object


def play(name, policy, seed=0, params=None, state=None, max_steps=2000) -> Episode:
    """One episode; ``policy(obs_history, t)`` picks the action of step t (1-based)."""
    env, reset, step = _compiled(name)
    params = env.default_params if params is None else params
    key = jax.random.key(seed)
    obs, first_state = reset(key, params)
    state = first_state if state is None else state
    history, rewards, terminated, truncated = [np.asarray(obs)], [], [], []
    for t in range(1, max_steps + 1):
        action = jnp.int32(policy(history, t))
        obs, state, reward, term, trunc, _ = step(jax.random.fold_in(key, t), state, action, params)
        history.append(np.asarray(obs))
        rewards.append(float(reward))
        terminated.append(bool(term))
        truncated.append(bool(trunc))
        if terminated[-1] or truncated[-1]:
            break
    return Episode(
        np.stack(history), np.array(rewards), np.array(terminated), np.array(truncated), state
    )


def constant(action):
    return lambda history, t: action


# -- registry and spaces ------------------------------------------------------------------------


def test_every_task_is_registered_at_every_difficulty():
    names = [n for n in envs.names() if n.startswith("popgym/")]
    assert sorted(names) == sorted(f"popgym/{t}{d}" for t in TASKS for d in DIFFICULTIES)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_spaces(name):
    env = envs.make_raw(f"popgym/{name}")
    params = env.default_params
    obs_size, num_actions = SPACES[name]
    assert env.observation_space(params).shape == (obs_size,)
    assert env.action_space(params) == envs.Discrete(num_actions)
    assert env.name == f"popgym/{name}"


def test_difficulty_settings():
    """Time limits and noise levels of POPGym's Easy / Medium / Hard."""

    def params(name):
        return envs.make_raw(f"popgym/{name}").default_params

    for d, limit in zip(DIFFICULTIES, (200, 400, 600), strict=True):
        assert params(f"StatelessCartPole{d}").max_steps_in_episode == limit
    for d, sigma in zip(DIFFICULTIES, (0.1, 0.2, 0.3), strict=True):
        p = params(f"NoisyStatelessCartPole{d}")
        assert p.max_steps_in_episode == 200 and p.noise_sigma == sigma
    for d, limit in zip(DIFFICULTIES, (16 - 2, 36 - 6, 64 - 10), strict=True):
        assert params(f"MineSweeper{d}").max_steps_in_episode == limit
    assert [params(f"RepeatPrevious{d}").k for d in DIFFICULTIES] == [4, 32, 64]


# -- card games ---------------------------------------------------------------------------------


def suit(obs):
    return int(np.argmax(obs[-4:]))


def oracle(name):
    """The perfect policy, computed from observations only."""
    if name.startswith("RepeatFirst"):
        return lambda history, t: suit(history[0])
    if name.startswith("RepeatPrevious"):
        k = envs.make_raw(f"popgym/{name}").default_params.k
        return lambda history, t: suit(history[t - k]) if t >= k else 0
    if name.startswith("Autoencode"):
        # the N cards are o_0 .. o_{N-1}; PLAY step j (1-based) recites o_{N-j}
        n = (CARD_EPISODES[name] + 1) // 2
        return lambda history, t: suit(history[2 * n - 1 - t]) if t >= n else 0

    def count(history, t):  # CountRecall: [one-hot value, one-hot query]
        d = history[0].size // 2
        values = np.stack(history)[:, :d].argmax(-1)
        return int((values == history[-1][d:].argmax()).sum())

    return count


@pytest.mark.parametrize("name", sorted(CARD_EPISODES))
def test_card_game_oracle_scores_one_and_episode_length(name):
    ep = play(name, oracle(name))
    length = CARD_EPISODES[name]
    assert len(ep.rewards) == length
    assert ep.terminated[-1] and not ep.terminated[:-1].any() and not ep.truncated.any()
    assert ep.rewards.sum() == pytest.approx(1.0, abs=1e-5)
    assert ep.obs.dtype == np.float32 and ((ep.obs == 0) | (ep.obs == 1)).all()


def test_repeat_previous_constant_action_scores_chance():
    """Easy (k = 4): the 48 scored targets are o_0 .. o_47, 9-13 of each suit. A constant suit s
    returns (2 c_s - 48) / 48; over the 4 suits the mean is chance level, -0.5, exactly."""
    returns = []
    for s in range(4):
        ep = play("RepeatPreviousEasy", constant(s))
        assert (ep.rewards[:3] == 0).all()  # the first k - 1 = 3 steps are not scored
        c = sum(suit(o) == s for o in ep.obs[:48])
        assert ep.rewards.sum() == pytest.approx((2 * c - 48) / 48, abs=1e-5)
        returns.append(ep.rewards.sum())
    assert np.mean(returns) == pytest.approx(-0.5, abs=1e-5)
    assert all(-0.625 - 1e-5 <= r <= -22 / 48 + 1e-5 for r in returns)


def test_repeat_first_constant_action_is_all_or_nothing():
    returns = []
    for s in range(4):
        ep = play("RepeatFirstEasy", constant(s))
        first = suit(ep.obs[0])
        np.testing.assert_allclose(ep.rewards, (1 if s == first else -1) / 51, rtol=1e-6)
        returns.append(ep.rewards.sum())
    assert sorted(np.round(returns, 5)) == [-1, -1, -1, 1]


def test_autoencode_watch_then_recite_in_reverse():
    n = 52
    forward = lambda history, t: suit(history[t - n]) if t >= n else 3  # noqa: E731
    ep = play("AutoencodeEasy", forward)
    assert len(ep.rewards) == 2 * n - 1
    modes = ep.obs[:, :2].argmax(-1)  # PLAY = 0, WATCH = 1
    assert (modes[: n - 1] == 1).all() and (modes[n - 1 :] == 0).all()
    assert ep.obs[n - 1, 2:].sum() == 1  # the last card shows together with the switch to PLAY
    np.testing.assert_array_equal(ep.obs[n:, 2:], np.eye(4)[np.zeros(n, int)])  # then suit 0
    assert (ep.rewards[: n - 1] == 0).all()  # watching is never scored, whatever the action
    cards = [suit(o) for o in ep.obs[:n]]
    hit = np.array([cards[j] == cards[n - 1 - j] for j in range(n)])  # forward, not reversed
    np.testing.assert_allclose(ep.rewards[n - 1 :], np.where(hit, 1 / n, -1 / n), rtol=1e-6)
    hits = hit.sum()
    assert ep.rewards.sum() == pytest.approx((2 * hits - n) / n, abs=1e-5) and hits < n


def test_count_recall_off_by_one_scores_minus_one():
    right = oracle("CountRecallEasy")
    ep = play("CountRecallEasy", lambda history, t: (right(history, t) + 1) % 27)
    np.testing.assert_allclose(ep.rewards, -1 / 51, rtol=1e-6)
    # the count includes the card dealt with the query: at step 1 it is 1 or 0
    value, query = ep.obs[0][:2].argmax(), ep.obs[0][2:].argmax()
    assert right(ep.obs[:1], 1) == int(value == query)


# -- StatelessCartPole --------------------------------------------------------------------------


def test_stateless_cartpole_matches_gymnasium_and_pays_popgym_rewards():
    """Pushing right topples the pole: every step, the failing one included, pays 1/200 (gymnasium
    pays 1 there, POPGym maps it to 1/L); stepping on after the failure pays -1, as in POPGym."""
    from gymnasium.envs.classic_control import CartPoleEnv

    env, reset, step = _compiled("StatelessCartPoleEasy")
    params = env.default_params
    obs, state = reset(jax.random.key(3), params)
    np.testing.assert_array_equal(obs, [state.x, state.theta])  # positions only, no velocities
    ref = CartPoleEnv()
    ref.reset(seed=0)
    ref.state = np.array([state.x, state.x_dot, state.theta, state.theta_dot], np.float64)
    for t in range(1, 50):
        ref_obs, ref_reward, ref_terminated, _, _ = ref.step(1)
        obs, state, reward, terminated, truncated, _ = step(jax.random.key(t), state, 1, params)
        np.testing.assert_allclose(obs, ref_obs[[0, 2]], atol=1e-5)
        assert bool(terminated) == ref_terminated and not bool(truncated)
        assert ref_reward == 1.0 and float(reward) == pytest.approx(1 / 200)
        if ref_terminated:
            break
    assert 5 < t < 20 and abs(float(state.theta)) > 12 * np.pi / 180
    _, _, reward, terminated, _, _ = step(jax.random.key(99), state, 1, params)
    assert float(reward) == -1.0 and bool(terminated)


def test_stateless_cartpole_truncates_at_the_time_limit():
    env = envs.make_raw("popgym/StatelessCartPoleEasy")
    params = env.default_params.replace(max_steps_in_episode=jnp.asarray(12, jnp.int32))
    ep = play("StatelessCartPoleEasy", lambda history, t: t % 2, params=params)  # wiggle
    assert len(ep.rewards) == 12 and ep.truncated[-1] and not ep.terminated.any()
    assert ep.rewards.sum() == pytest.approx(1.0)


def test_noisy_stateless_cartpole_noise_scale():
    """obs = clip([x, theta] + N(0, sigma^2), +-[4.8, 0.419]) at reset and at every step."""
    env = envs.make_raw("popgym/NoisyStatelessCartPoleEasy")
    keys = jax.random.split(jax.random.key(0), 4096)

    @jax.jit
    def residuals(params):
        obs, state = jax.vmap(env.reset, (0, None))(keys, params)
        out = jax.vmap(env.step, (0, 0, None, None))(keys, state, 0, params)
        noise = [o - jnp.stack([s.x, s.theta], -1) for o, s in ((obs, state), out[:2])]
        return jnp.stack(noise), jnp.stack([obs, out[0]])

    bound = 2 * 12 * 2 * np.pi / 360
    for d, sigma in zip(DIFFICULTIES, (0.1, 0.2, 0.3), strict=True):
        noise, obs = map(
            np.asarray, residuals(envs.make_raw(f"popgym/NoisyStatelessCartPole{d}").default_params)
        )
        x_noise = noise[..., 0]
        assert abs(x_noise.mean()) < 0.05 * sigma
        np.testing.assert_allclose(x_noise.std(axis=1), sigma, rtol=0.05)
        assert (np.abs(obs[..., 1]) <= bound + 1e-6).all()
        clipped = (np.abs(obs[..., 1]) >= bound - 1e-6).mean()
        expected = 2 * (1 - 0.5 * (1 + math.erf(bound / (sigma * np.sqrt(2)))))  # P(|N(0, s)| > b)
        assert clipped == pytest.approx(expected, abs=0.02)


# -- MineSweeper --------------------------------------------------------------------------------

# Easy board with mines at (0, 0) and (3, 3); a tile's count includes itself.
MINES = np.zeros((4, 4), np.int32)
MINES[0, 0] = MINES[3, 3] = 1
COUNTS = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])


def _board():
    assert (np.asarray(neighbour_counts(jnp.asarray(MINES))) == COUNTS).all()
    return MineSweeperState(
        jnp.asarray(MINES.reshape(-1)), jnp.asarray(COUNTS.reshape(-1)), jnp.zeros((), jnp.int32)
    )


def test_minesweeper_rewards_on_a_known_board():
    clicks = [1, 1, 6, 15]  # (0,1) free, (0,1) again, (1,2) free, (3,3) mine
    ep = play("MineSweeperEasy", lambda history, t: clicks[t - 1], state=_board())
    np.testing.assert_allclose(ep.rewards, [1 / 14, -0.5 / 12, 1 / 14, -0.5 - 1 / 14], rtol=1e-6)
    np.testing.assert_array_equal(ep.obs.argmax(-1), [0, 1, 1, 0, 1])
    assert ep.terminated.tolist() == [False, False, False, True] and not ep.truncated.any()


def test_minesweeper_clearing_the_board_returns_one():
    free = [i for i in range(16) if MINES.reshape(-1)[i] == 0]
    ep = play("MineSweeperEasy", lambda history, t: free[t - 1], state=_board())
    assert len(ep.rewards) == 14 and ep.terminated[-1] and not ep.terminated[:-1].any()
    assert ep.rewards.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(ep.obs[1:].argmax(-1), COUNTS.reshape(-1)[free])


def test_minesweeper_truncates_after_free_tile_count_steps():
    ep = play("MineSweeperEasy", constant(5), state=_board())
    assert len(ep.rewards) == 14 and ep.truncated[-1] and not ep.terminated.any()
    assert ep.rewards.sum() == pytest.approx(1 / 14 - 13 * 0.5 / 12, abs=1e-5)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_minesweeper_reset_places_the_mines(difficulty):
    env = envs.make_raw(f"popgym/MineSweeper{difficulty}")
    params = env.default_params
    obs, state = env.reset(jax.random.key(1), params)
    assert int((state.grid == 1).sum()) == params.num_mines
    grid = state.grid.reshape(params.rows, params.cols)
    np.testing.assert_array_equal(state.neighbours.reshape(grid.shape), neighbour_counts(grid))
    np.testing.assert_array_equal(obs, np.eye(obs.size)[0])


# -- PreviousActionObservation ------------------------------------------------------------------


def test_previous_action_observation_content():
    env, reset, step = _compiled("RepeatPreviousEasy", previous_action=True)
    params = env.default_params
    assert env.observation_space(params).shape == (4 + 4 + 1,)
    obs, state = reset(jax.random.key(0), params)
    card = np.asarray(obs[:4])
    np.testing.assert_array_equal(obs[4:], [0, 0, 0, 0, 1])  # no action yet, first step
    assert card.sum() == 1
    obs, state, *_ = step(jax.random.key(1), state, 2, params)
    np.testing.assert_array_equal(obs[4:], [0, 0, 1, 0, 0])
    obs, state, *_ = step(jax.random.key(2), state, 0, params)
    np.testing.assert_array_equal(obs[4:], [1, 0, 0, 0, 0])


def test_previous_action_observation_under_auto_reset():
    """After a time-limit cut the next observation is a reset one (zeros, flag 1) while the final
    observation carries the last action."""
    raw = PreviousActionObservation(envs.make_raw("popgym/StatelessCartPoleEasy"))
    env = envs.AutoReset(raw)
    params = env.default_params.replace(max_steps_in_episode=jnp.asarray(2, jnp.int32))
    space = env.observation_space(params)
    np.testing.assert_allclose(space.high, [4.8, 2 * 12 * 2 * np.pi / 360, 1, 1, 1], rtol=1e-6)
    np.testing.assert_array_equal(space.low[2:], 0)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    obs, state, _, _, truncated, info = step(jax.random.key(1), state, 1, params)
    np.testing.assert_array_equal(obs[2:], [0, 1, 0])
    obs, state, _, _, truncated, info = step(jax.random.key(2), state, 0, params)
    assert bool(truncated)
    np.testing.assert_array_equal(obs[2:], [0, 0, 1])
    np.testing.assert_array_equal(info["final_observation"][2:], [1, 0, 0])


def test_previous_action_observation_wraps_other_backends():
    catch = PreviousActionObservation(envs.make_raw("gymnax/Catch-bsuite"))  # (10, 5) grid
    params = catch.default_params
    obs, _ = catch.reset(jax.random.key(0), params)
    assert obs.shape == catch.observation_space(params).shape == (50 + 3 + 1,)
    with pytest.raises(TypeError, match="Discrete"):
        PreviousActionObservation(envs.make_raw("gymnax/Pendulum-v1"))
