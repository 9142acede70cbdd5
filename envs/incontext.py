"""In-context meta-RL over any JAX env: a random linear projection per trial (Lu et al.,
"Structured State Space Models for In-Context Reinforcement Learning", NeurIPS 2023).

A *trial* is ``episodes_per_trial`` episodes of the underlying env under one task: observations
are multiplied by a random matrix W (``obs_dim x d``, entries N(0, 1/d)) and discrete actions go
through a random permutation (continuous actions through a random matrix). The agent sees
``[W obs, previous action (one-hot), previous reward, inner-episode-start flag]``. Inside a trial
the underlying env is reset without ending the trial, so a recurrent agent keeps its memory and
can adapt; the trial ends (``terminated``) after the last episode, and the next trial draws a
new task, so memory is reset between trials.

Tasks: training draws fresh projections; the held-out split draws from ``num_test_tasks`` fixed
projections generated from a separate key, never used for training (``eval_params``).
``info`` reports ``inner_episode_done``, ``inner_episode_return`` and ``episode_index`` (which
episode of the trial just ended), so evaluation can report the return per episode index.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.core import Environment
from seqrl.envs.spaces import Box, Discrete

TEST_TASK_KEY = 2_147_483_629  # held-out projections derive from this seed only


def _raw_key(key: jax.Array) -> jax.Array:
    return (
        jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    )


@struct.dataclass
class InContextParams:
    env_params: Any
    episodes_per_trial: int = 4
    test: bool = False  # draw held-out projections


@struct.dataclass
class InContextState:
    env_state: Any
    obs_matrix: jax.Array
    action_map: jax.Array  # permutation (discrete) or matrix (continuous)
    episode_index: jax.Array
    inner_return: jax.Array
    prev_action: jax.Array
    prev_reward: jax.Array
    inner_first: jax.Array


def advance_trial(state, action, stepped, reset, episodes_per_trial):
    """One step of a trial of several episodes of one task. ``state`` has ``env_state``,
    ``episode_index``, ``inner_return``, ``prev_action``, ``prev_reward``, ``inner_first``;
    ``stepped`` is the inner env's step output, ``reset`` its reset to the SAME task (used when
    the inner episode ended). Returns (inner obs, new state, trial over, info)."""
    obs, env_state, reward, terminated, truncated, _ = stepped
    obs_reset, env_state_reset = reset
    inner_done = jnp.logical_or(terminated, truncated)
    inner_return = state.inner_return + reward
    obs = jnp.where(inner_done, obs_reset, obs)
    env_state = jax.tree.map(lambda a, b: jnp.where(inner_done, a, b), env_state_reset, env_state)
    trial_over = jnp.logical_and(inner_done, state.episode_index + 1 >= episodes_per_trial)
    new_state = state.replace(
        env_state=env_state,
        episode_index=state.episode_index + inner_done.astype(jnp.int32),
        inner_return=jnp.where(inner_done, 0.0, inner_return),
        prev_action=action,
        prev_reward=reward.astype(jnp.float32),
        inner_first=inner_done,
    )
    info = {
        "inner_episode_done": inner_done,
        "inner_episode_return": inner_return,
        "episode_index": state.episode_index,
    }
    return obs, new_state, trial_over, info


class InContextProjection(Environment):
    """Wraps a *raw* env (``make_raw``); the result is raw too (trial = episode)."""

    def __init__(
        self,
        env: Environment,
        episodes_per_trial: int = 4,
        obs_dim: int | None = None,
        num_test_tasks: int = 64,
    ):
        self.env = env
        self.episodes_per_trial = episodes_per_trial
        self.num_test_tasks = num_test_tasks
        inner = env.default_params
        self.inner_obs_dim = math.prod(env.observation_space(inner).shape)
        self.obs_dim = obs_dim or self.inner_obs_dim
        self.inner_action_space = env.action_space(inner)

    @property
    def name(self) -> str:
        return f"incontext/{self.env.name.split('/')[-1]}"

    @property
    def default_params(self) -> InContextParams:
        return InContextParams(self.env.default_params, self.episodes_per_trial, False)

    def eval_params(self, params: InContextParams) -> InContextParams:
        """The held-out split: evaluation uses projections never seen in training."""
        return params.replace(test=True)

    @property
    def _action_width(self) -> int:
        space = self.inner_action_space
        return space.n if isinstance(space, Discrete) else int(space.shape[0])

    def _sample_task(self, key: jax.Array, params: InContextParams):
        key_task, key_test = jax.random.split(key)
        test_id = jax.random.randint(key_test, (), 0, self.num_test_tasks)
        test_key = jax.random.fold_in(jax.random.PRNGKey(TEST_TASK_KEY), test_id)
        # fresh tasks for training (a held-out key is hit with probability ~0)
        k_obs, k_act = jax.random.split(jnp.where(params.test, test_key, _raw_key(key_task)))
        w = jax.random.normal(k_obs, (self.obs_dim, self.inner_obs_dim)) / jnp.sqrt(
            self.inner_obs_dim
        )
        if isinstance(self.inner_action_space, Discrete):
            action_map = jax.random.permutation(k_act, self.inner_action_space.n)
        else:
            d = self._action_width
            action_map = jax.random.normal(k_act, (d, d)) / jnp.sqrt(d)
        return w, action_map

    def _observe(self, inner_obs, state: InContextState) -> jax.Array:
        projected = state.obs_matrix @ inner_obs.reshape(-1)
        if isinstance(self.inner_action_space, Discrete):
            prev = jax.nn.one_hot(state.prev_action, self.inner_action_space.n)
        else:
            prev = state.prev_action
        extra = jnp.stack([state.prev_reward, state.inner_first.astype(jnp.float32)])
        return jnp.concatenate([projected, prev, extra]).astype(jnp.float32)

    def reset(self, key, params):
        key_task, key_env = jax.random.split(key)
        w, action_map = self._sample_task(key_task, params)
        obs, env_state = self.env.reset(key_env, params.env_params)
        discrete = isinstance(self.inner_action_space, Discrete)
        state = InContextState(
            env_state=env_state,
            obs_matrix=w,
            action_map=action_map,
            episode_index=jnp.zeros((), jnp.int32),
            inner_return=jnp.zeros(()),
            prev_action=jnp.zeros((), jnp.int32) if discrete else jnp.zeros(self._action_width),
            prev_reward=jnp.zeros(()),
            inner_first=jnp.ones((), jnp.bool_),
        )
        return self._observe(obs, state), state

    def step(self, key, state, action, params):
        key_step, key_reset = jax.random.split(key)
        if isinstance(self.inner_action_space, Discrete):
            inner_action = state.action_map[action]
        else:
            inner_action = state.action_map @ action
        stepped = self.env.step(key_step, state.env_state, inner_action, params.env_params)
        reset = self.env.reset(key_reset, params.env_params)
        obs, new_state, trial_over, info = advance_trial(
            state, action, stepped, reset, params.episodes_per_trial
        )
        reward = stepped[2]
        return (
            self._observe(obs, new_state),
            new_state,
            reward,
            trial_over,
            jnp.zeros((), jnp.bool_),
            info,
        )

    def observation_space(self, params) -> Box:
        return Box.make(-jnp.inf, jnp.inf, (self.obs_dim + self._action_width + 2,))

    def action_space(self, params):
        return self.inner_action_space
