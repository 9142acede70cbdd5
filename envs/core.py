"""The environment protocol and the wrappers every agent composes.

Protocol (gymnax 1.0 style, pure functions over pytrees):

    reset(key, params) -> obs, state
    step(key, state, action, params) -> obs, state, reward, terminated, truncated, info

``params`` is a pytree and is the task handle (meta-RL samples it). Backend adapters
(`envs/gymnax.py`, `envs/brax.py`) are *raw*: they never reset by themselves. ``AutoReset``
turns a raw env into the protocol's auto-resetting form, where ``info["final_observation"]``
holds the observation the episode really ended on (needed to bootstrap on truncation).
``make`` in `envs/registry.py` returns ``EpisodeStatistics(AutoReset(raw))``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.spaces import Box, Space


class Environment:
    """Base class: subclasses implement ``reset``, ``step``, spaces and ``default_params``."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def default_params(self) -> Any:
        raise NotImplementedError

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
        raise NotImplementedError

    def observation_space(self, params: Any) -> Box:
        raise NotImplementedError

    def action_space(self, params: Any) -> Space:
        raise NotImplementedError

    @property
    def unwrapped(self) -> Environment:
        return self


class Wrapper(Environment):
    """Delegates everything it does not override to the wrapped env."""

    def __init__(self, env: Environment):
        self.env = env

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def default_params(self) -> Any:
        return self.env.default_params

    def reset(self, key, params):
        return self.env.reset(key, params)

    def step(self, key, state, action, params):
        return self.env.step(key, state, action, params)

    def observation_space(self, params):
        return self.env.observation_space(params)

    def action_space(self, params):
        return self.env.action_space(params)

    @property
    def unwrapped(self) -> Environment:
        return self.env.unwrapped


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class AutoReset(Wrapper):
    """Resets when an episode ends (terminated or truncated).

    The returned observation is the first of the next episode; the one the episode ended on is
    ``info["final_observation"]`` (equal to the returned observation when nothing ended).
    """

    def step(self, key, state, action, params):
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = self.env.step(
            key_step, state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        obs_reset, state_reset = self.env.reset(key_reset, params)
        info = {**info, "final_observation": obs}
        obs = _select(done, obs_reset, obs)
        state = _select(done, state_reset, state)
        return obs, state, reward, terminated, truncated, info


@struct.dataclass
class EpisodeStatisticsState:
    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class EpisodeStatistics(Wrapper):
    """Adds the return and length of episodes as they end.

    ``info["episode_done"]`` marks steps that ended an episode; ``info["episode_return"]`` and
    ``info["episode_length"]`` hold that episode's totals there (and the running totals elsewhere).
    """

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        zero = jnp.zeros((), jnp.float32)
        return obs, EpisodeStatisticsState(state, zero, jnp.zeros((), jnp.int32))

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        ret = state.episode_return + reward.astype(jnp.float32)
        length = state.episode_length + 1
        info = {**info, "episode_done": done, "episode_return": ret, "episode_length": length}
        state = EpisodeStatisticsState(
            env_state,
            jnp.where(done, 0.0, ret),
            jnp.where(done, 0, length),
        )
        return obs, state, reward, terminated, truncated, info


class ClipAction(Wrapper):
    """Clips continuous actions into the action space's bounds (Gaussian policies overshoot)."""

    def step(self, key, state, action, params):
        space = self.env.action_space(params)
        if isinstance(space, Box):
            action = jnp.clip(action, space.low, space.high)
        return self.env.step(key, state, action, params)


class VecEnv(Wrapper):
    """``num_envs`` copies stepped in lock-step with ``jax.vmap``; keys are split per copy.

    ``params_axis=None`` shares one params pytree; ``0`` gives each copy its own (task batches).
    """

    def __init__(self, env: Environment, num_envs: int, params_axis: int | None = None):
        super().__init__(env)
        self.num_envs = num_envs
        self.params_axis = params_axis

    def reset(self, key, params):
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(self.env.reset, in_axes=(0, self.params_axis))(keys, params)

    def step(self, key, state, action, params):
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(self.env.step, in_axes=(0, 0, 0, self.params_axis))(
            keys, state, action, params
        )


@struct.dataclass
class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4, jnp.float32))

    def update(self, batch: jax.Array) -> RunningMeanStd:
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 = m2 + delta**2 * self.count * batch_count / total
        return RunningMeanStd(mean, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float = 10.0) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


@struct.dataclass
class NormalizeObservationState:
    env_state: Any
    stats: RunningMeanStd


class NormalizeObservation(Wrapper):
    """Normalizes a batch of observations with running statistics kept in the env state.

    Wraps a ``VecEnv``. Given ``stats``, it uses them frozen (evaluating a trained policy); the
    statistics are part of the learner state, so checkpoints carry them.
    """

    def __init__(self, env: Environment, stats: RunningMeanStd | None = None):
        super().__init__(env)
        self.stats = stats
        self.frozen = stats is not None

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        if self.frozen:
            stats = self.stats
        else:
            stats = RunningMeanStd.create(obs.shape[1:]).update(obs)
        return stats.normalize(obs), NormalizeObservationState(state, stats)

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params
        )
        stats = state.stats if self.frozen else state.stats.update(obs)
        info = {**info, "final_observation": stats.normalize(info["final_observation"])}
        return (
            stats.normalize(obs),
            NormalizeObservationState(env_state, stats),
            (reward),
            terminated,
            truncated,
            info,
        )


@struct.dataclass
class NormalizeRewardState:
    env_state: Any
    stats: RunningMeanStd
    discounted_return: jax.Array


class NormalizeReward(Wrapper):
    """Scales rewards by the running std of the discounted return (wraps a ``VecEnv``)."""

    def __init__(self, env: Environment, gamma: float):
        super().__init__(env)
        self.gamma = gamma

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        batch = obs.shape[0]
        return obs, NormalizeRewardState(state, RunningMeanStd.create(()), jnp.zeros(batch))

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        ret = state.discounted_return * self.gamma * (1 - done) + reward
        stats = state.stats.update(ret)
        reward = reward / jnp.sqrt(stats.var + 1e-8)
        return obs, NormalizeRewardState(env_state, stats, ret), reward, terminated, truncated, info


def find_state(state: Any, cls: type) -> Any | None:
    """The first wrapper state of type ``cls`` inside nested wrapper states (or None)."""
    while state is not None:
        if isinstance(state, cls):
            return state
        state = getattr(state, "env_state", None)
    return None
