"""The in-context meta-RL wrapper: trials of several episodes under one random projection."""

import jax
import jax.numpy as jnp
import numpy as np

import seqrl.envs as envs
from seqrl.envs.incontext import InContextProjection


def _rollout(env, params, key, steps, action_fn):
    obs, state = env.reset(key, params)

    def step(carry, key):
        obs, state, t = carry
        action = action_fn(t)
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return (obs, state, t + 1), (obs, state, reward, terminated, info)

    return jax.lax.scan(step, (obs, state, 0), jax.random.split(key, steps))[1]


def test_trial_spans_episodes_with_one_projection():
    env = envs.make("incontext/CartPole-v1", episodes_per_trial=3)
    params = env.default_params
    obs, state, reward, terminated, info = jax.jit(
        lambda k: _rollout(env, params, k, 200, lambda t: jnp.int32(0))
    )(jax.random.PRNGKey(0))
    inner_done = np.asarray(info["inner_episode_done"])
    trial_done = np.asarray(info["episode_done"])
    matrices = np.asarray(state.env_state.obs_matrix)
    first_end = int(np.argmax(trial_done))
    # a trial ends exactly at its third inner episode end, and only then
    assert trial_done.any() and np.cumsum(inner_done)[first_end] == 3
    np.testing.assert_array_equal(np.asarray(terminated), trial_done)
    # the projection is fixed inside the trial and redrawn for the next one
    np.testing.assert_array_equal(matrices[0], matrices[first_end - 1])
    assert not np.allclose(matrices[first_end - 1], matrices[first_end])
    # the episode index counts inner episodes; the start flag marks their first observation
    index = np.asarray(info["episode_index"])[: first_end + 1][inner_done[: first_end + 1]]
    np.testing.assert_array_equal(index, [0, 1, 2])
    np.testing.assert_array_equal(np.asarray(obs)[:, -1], inner_done.astype(np.float32))
    # the trial's return is the sum of its episodes' returns
    inner_returns = np.asarray(info["inner_episode_return"])[: first_end + 1][
        inner_done[: first_end + 1]
    ]
    np.testing.assert_allclose(np.asarray(info["episode_return"])[first_end], inner_returns.sum())


def test_observation_is_the_projection_plus_feedback():
    raw = envs.make_raw("gymnax/CartPole-v1")
    env = InContextProjection(raw, episodes_per_trial=2, obs_dim=6)
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(3), params)
    inner_obs, _ = raw.reset(jax.random.split(jax.random.PRNGKey(3))[1], params.env_params)
    assert obs.shape == env.observation_space(params).shape == (6 + 2 + 2,)
    np.testing.assert_allclose(obs[:6], state.obs_matrix @ inner_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(obs[6:], [1.0, 0.0, 0.0, 1.0])  # no action yet, start flag
    obs, state, reward, *_ = env.step(jax.random.PRNGKey(4), state, 1, params)
    np.testing.assert_array_equal(obs[6:8], [0.0, 1.0])  # one-hot of the agent's action
    assert obs[8] == reward and obs[9] == 0.0
    # the agent's action goes through the trial's permutation
    assert sorted(np.asarray(state.action_map).tolist()) == [0, 1]


def test_held_out_split_is_a_fixed_disjoint_set():
    env = InContextProjection(envs.make_raw("gymnax/CartPole-v1"), num_test_tasks=4)
    test = env.eval_params(env.default_params)
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    test_w = np.asarray(reset(keys, test)[1].obs_matrix).reshape(64, -1)
    train_w = np.asarray(reset(keys, env.default_params)[1].obs_matrix).reshape(64, -1)
    assert len(np.unique(test_w.round(6), axis=0)) == 4  # only the 4 held-out projections
    assert len(np.unique(train_w.round(6), axis=0)) == 64  # fresh ones in training
    for w in train_w:
        assert not (np.abs(test_w - w).max(axis=1) < 1e-6).any()
