"""The environment contract over every registered env, and the wrappers' semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqrl.envs as envs
from seqrl.envs.core import (
    NormalizeObservationState,
    RunningMeanStd,
    find_state,
)
from seqrl.errors import UserError

ALL = [n for n in envs.names() if not envs.is_host(n)]  # host envs: test_meta_families.py
# Compiling brax physics costs 20-70 CPU-s per env: brax envs get the traced (shape/dtype)
# contract; the jitted behavioural contract runs on every gymnax env and on brax/fast, which
# exercises the same adapter and wrappers (the brax task families' rewards: tests/test_meta.py).
BRAX_BODIES = tuple(  # task families on brax bodies
    f"meta/{n}" for n in ("CheetahVel", "CheetahDir", "AntDir", "HopperParam", "WalkerParam")
)
JITTED = [n for n in ALL if not n.startswith("brax/") and n not in BRAX_BODIES] + ["brax/fast"]
TRACED = [n for n in ALL if n not in JITTED]  # the jitted rollout checks the others' shapes


def _short_episodes(env, params):
    """Params with a 5-step time limit where the env has one (so truncation is exercised)."""
    if hasattr(params, "max_steps_in_episode"):
        limit = params.max_steps_in_episode
        return params.replace(
            max_steps_in_episode=jax.numpy.asarray(5).astype(jnp.result_type(limit))
        )
    return params


@pytest.mark.parametrize("name", TRACED)
def test_contract_shapes_and_dtypes(name):
    env = envs.make(name)
    params = env.default_params
    obs_space = env.observation_space(params)
    act_space = env.action_space(params)

    def reset_and_step(key):  # traced once, never run
        obs, state = env.reset(key, params)
        action = act_space.sample(key)
        return obs, action, env.step(key, state, action, params)

    obs, action, stepped = jax.eval_shape(reset_and_step, jax.random.key(0))
    assert obs.shape == obs_space.shape and obs.dtype == jnp.float32
    assert action.shape == act_space.shape
    if isinstance(act_space, envs.Discrete):
        assert action.dtype == jnp.int32 and act_space.n >= 1
    obs2, _, reward, terminated, truncated, info = stepped
    assert obs2.shape == obs.shape and obs2.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32
    assert terminated.shape == () and terminated.dtype == jnp.bool_
    assert truncated.shape == () and truncated.dtype == jnp.bool_
    assert info["final_observation"].shape == obs.shape
    for k in ("episode_done", "episode_return", "episode_length"):
        assert info[k].shape == ()


@pytest.mark.parametrize("name", JITTED)
def test_contract_rollout_auto_reset_and_final_observation(name):
    num_envs, steps = 3, 24
    venv = envs.VecEnv(envs.ClipAction(envs.make(name)), num_envs)
    params = _short_episodes(venv, venv.default_params)
    act_space = venv.action_space(params)

    @jax.jit
    def rollout(key):
        obs, state = venv.reset(key, params)

        def step(carry, key):
            obs, state = carry
            k_act, k_step = jax.random.split(key)
            action = jax.vmap(act_space.sample)(jax.random.split(k_act, num_envs))
            out = venv.step(k_step, state, action, params)
            return (out[0], out[1]), (obs, *out[:1], *out[2:])

        _, traj = jax.lax.scan(step, (obs, state), jax.random.split(key, steps))
        return traj

    prev_obs, obs, reward, terminated, truncated, info = jax.tree.map(
        np.asarray, rollout(jax.random.key(1))
    )
    done = terminated | truncated
    # the contract's shapes and dtypes (an action from the space, float32 observations and
    # rewards, boolean episode ends, the statistics per env)
    action = jax.eval_shape(envs.make(name).action_space(params).sample, jax.random.key(0))
    space = venv.action_space(params)
    assert action.shape == space.shape
    if isinstance(space, envs.Discrete):
        assert action.dtype == jnp.int32 and space.n >= 1
    assert obs.shape == (steps, num_envs, *venv.observation_space(params).shape)
    assert obs.dtype == prev_obs.dtype == reward.dtype == np.float32
    assert reward.shape == terminated.shape == truncated.shape == (steps, num_envs)
    assert terminated.dtype == truncated.dtype == np.bool_
    assert info["final_observation"].shape == obs.shape
    for k in ("episode_done", "episode_return", "episode_length"):
        assert info[k].shape == (steps, num_envs)
    assert np.isfinite(obs).all() and np.isfinite(reward).all()
    final = info["final_observation"]
    # Without an episode end the returned observation is the final one ...
    np.testing.assert_allclose(obs[~done], final[~done], rtol=1e-5, atol=1e-6)
    # ... and the episode statistics count every step of an episode exactly once.
    assert (info["episode_done"] == done).all()
    lengths = info["episode_length"]
    np.testing.assert_array_equal(lengths[1:][~done[:-1]], lengths[:-1][~done[:-1]] + 1)
    np.testing.assert_array_equal(lengths[1:][done[:-1]], 1)
    returns = info["episode_return"]
    np.testing.assert_allclose(returns[0], reward[0], rtol=1e-6)
    if hasattr(params, "max_steps_in_episode"):
        assert done.any(), "a 5-step time limit must end episodes within 24 steps"
        assert (lengths[done] <= 5).all()
        assert (truncated == (lengths >= 5)).all()


def test_auto_reset_returns_first_observation_of_next_episode():
    """CartPole with a 3-step limit: after the cut, obs is a fresh reset state (|x| <= 0.05)
    while final_observation is where the pole was at the limit."""
    env = envs.make("gymnax/CartPole-v1")
    params = env.default_params.replace(max_steps_in_episode=3)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    for t in range(3):
        obs, state, _, terminated, truncated, info = step(jax.random.key(t), state, 1, params)
    assert bool(truncated) and not bool(terminated)
    assert np.abs(np.asarray(obs)).max() <= 0.05  # a reset draws from U(-0.05, 0.05)
    assert np.abs(np.asarray(info["final_observation"])[1]) > 0.1  # the cart was pushed 3 times
    assert int(info["episode_length"]) == 3 and float(info["episode_return"]) == 3.0


def test_normalize_observation_tracks_running_statistics():
    venv = envs.VecEnv(envs.make("gymnax/CartPole-v1"), 64)
    norm = envs.NormalizeObservation(venv)
    params = venv.default_params
    obs, state = norm.reset(jax.random.key(0), params)
    raw, _ = venv.reset(jax.random.key(0), params)
    stats = find_state(state, NormalizeObservationState).stats
    np.testing.assert_allclose(stats.mean, raw.mean(0), atol=1e-4)
    np.testing.assert_allclose(obs, stats.normalize(raw), atol=1e-5)
    # centred and scaled, by the formula (not by the method under test)
    expected = (np.asarray(raw) - stats.mean) / np.sqrt(np.asarray(stats.var) + 1e-8)
    np.testing.assert_allclose(obs, expected, rtol=1e-4, atol=1e-4)
    spread = np.asarray(obs).std(0)
    assert (spread > 0.8).all() and (spread < 1.2).all(), spread
    frozen = envs.NormalizeObservation(venv, stats=RunningMeanStd.create((4,)))
    obs_f, state_f = frozen.reset(jax.random.key(0), params)
    np.testing.assert_allclose(obs_f, raw, atol=1e-3)  # identity stats (mean 0, var 1)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(5, 100, 2)).astype(np.float32)
    stats = RunningMeanStd(jnp.zeros(2), jnp.ones(2), jnp.asarray(0.0))
    for batch in data:
        stats = stats.update(jnp.asarray(batch))
    flat = data.reshape(-1, 2)
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, flat.var(0), rtol=1e-4)


def test_normalize_reward_scales_by_return_std():
    venv = envs.VecEnv(envs.make("gymnax/CartPole-v1"), 8)
    env = envs.NormalizeReward(venv, gamma=0.99)
    params = venv.default_params
    obs, state = env.reset(jax.random.key(0), params)
    out = jax.jit(env.step)(jax.random.key(1), state, jnp.zeros(8, jnp.int32), params)
    ret_std = np.sqrt(np.asarray(out[1].stats.var))
    np.testing.assert_allclose(out[2], 1.0 / np.sqrt(ret_std**2 + 1e-8), rtol=1e-4)


def test_clip_action_clips_into_bounds():
    env = envs.ClipAction(envs.make_raw("gymnax/Pendulum-v1"))
    params = env.default_params
    _, state = env.reset(jax.random.key(0), params)
    clipped = env.step(jax.random.key(1), state, jnp.array([50.0]), params)
    at_bound = env.step(jax.random.key(1), state, jnp.array([2.0]), params)
    np.testing.assert_allclose(clipped[0], at_bound[0])


def test_unknown_env_names_closest():
    with pytest.raises(UserError, match="closest: gymnax/CartPole-v1"):
        envs.make("gymnax/CartPol")
    with pytest.raises(UserError, match="gymnax/CartPole-v1"):
        envs.make("cartpole")


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        envs.register("gymnax/CartPole-v1", lambda: None)


def test_gymnax_adapter_defers_seaborn_until_used():
    """gymnax's Pong imports seaborn (and scipy.stats) for rendering: the adapter defers it,
    and seaborn still works when someone uses it."""
    import subprocess
    import sys

    code = (
        "import sys, seqrl.envs.gymnax as g\n"
        "assert 'seaborn.relational' not in sys.modules and 'scipy.stats' not in sys.modules\n"
        "g.GymnaxEnv  # the adapter is usable\n"
        "import seaborn as sns\n"
        "assert len(sns.color_palette('cubehelix', 3)) == 3\n"
        "assert type(sys.modules['seaborn']).__name__ == 'module'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_vec_env_gives_every_copy_its_own_randomness():
    """16 copies of probe/MatchCue draw their own symbol at reset and at every step (one key
    shared by all would show every copy the same symbol)."""
    venv = envs.VecEnv(envs.make("probe/MatchCue-v0"), 16)
    params = venv.default_params
    obs, state = jax.jit(venv.reset)(jax.random.key(0), params)
    step = jax.jit(venv.step)
    seen = [np.asarray(obs).argmax(-1)]
    for t in range(3):
        obs, state, *_ = step(jax.random.key(t + 1), state, jnp.zeros(16, jnp.int32), params)
        seen.append(np.asarray(obs).argmax(-1))
    assert all(0 < s.sum() < 16 for s in seen), seen


def test_evaluation_returns_each_copys_first_episode():
    """The guide's Line env with a goal per copy (0.2, 0.5, 1.0, 1.5) and a policy that moves
    right except at steps 3 and 4: copy 0 reaches 0.2 after 2 steps (rewards -0.1, 0: return
    -0.1) and finishes a second, different episode (left, left, then right: -0.3 - 0.4 - 0.3 -
    0.2 - 0.1 = -1.3) before copy 3 ends its first. The evaluation reports first episodes."""
    from docs.examples.line_env import LineParams
    from seqrl.evaluate import episode_returns

    venv = envs.VecEnv(envs.make("docs.examples.line_env:Line"), 4, params_axis=0)
    goals = jnp.array([0.2, 0.5, 1.0, 1.5])
    params = LineParams(goal=goals, max_steps_in_episode=jnp.full(4, 40, jnp.int32))

    def policy(t, obs, first, key):
        left = (t == 2) | (t == 3)  # the carry counts steps from 0
        return t + 1, jnp.where(left, 0, 2) * jnp.ones(4, jnp.int32)

    run = jax.jit(lambda key: episode_returns(policy, 0, venv, params, key, 60)["returns"])
    returns = np.asarray(run(jax.random.key(0)))
    # copy g: 2 steps right, 2 left (back to 0), then right to g; distances summed by hand
    expected = [-0.1]
    for g in (0.5, 1.0, 1.5):
        positions = [0.1, 0.2, 0.1, 0.0] + [0.1 * k for k in range(1, round(g / 0.1) + 1)]
        expected.append(-sum(abs(x - g) for x in positions))
    np.testing.assert_allclose(returns, expected, atol=1e-4)
