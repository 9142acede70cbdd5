"""Adapter: brax environments as raw (non-resetting) seqrl environments.

Physics stays behind this file (brax points users to MJX / mujoco_playground): swapping the
backend touches nothing else. ``spring`` is the default backend: it compiles and runs fastest
on CPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.core import Environment
from seqrl.envs.spaces import Box


@struct.dataclass
class BraxParams:
    max_steps_in_episode: int = 1000


@struct.dataclass
class BraxState:
    pipeline: Any  # brax.envs.base.State
    time: jax.Array


class BraxEnv(Environment):
    """A brax ``Env`` with time-limit truncation at ``params.max_steps_in_episode``."""

    def __init__(self, env_name: str, backend: str | None = None, episode_length: int = 1000, **kw):
        backend = backend or "spring"
        from brax import envs as brax_envs

        with warnings.catch_warnings():  # brax warns on every load that it is unmaintained
            warnings.simplefilter("ignore", UserWarning)
            self.env = brax_envs.get_environment(env_name, backend=backend, **kw)
        self.env_name = env_name
        self.backend = backend
        self.episode_length = episode_length
        self._obs_shape = None

    @property
    def name(self) -> str:
        return f"brax/{self.env_name}"

    @property
    def default_params(self) -> BraxParams:
        return BraxParams(max_steps_in_episode=self.episode_length)

    def reset(self, key, params):
        state = self.env.reset(key)
        return jnp.asarray(state.obs, jnp.float32), BraxState(state, jnp.zeros((), jnp.int32))

    def step(self, key, state, action, params):
        del key  # brax dynamics are deterministic
        next_state = self.env.step(state.pipeline, action)
        time = state.time + 1
        terminated = jnp.asarray(next_state.done) > 0.5
        truncated = time >= params.max_steps_in_episode
        return (
            jnp.asarray(next_state.obs, jnp.float32),
            BraxState(next_state, time),
            jnp.asarray(next_state.reward, jnp.float32),
            terminated,
            truncated,
            {},
        )

    def observation_space(self, params) -> Box:
        if self._obs_shape is None:  # trace only: brax's own observation_size runs a reset
            obs = jax.eval_shape(self.env.reset, jax.random.key(0)).obs
            self._obs_shape = tuple(obs.shape)
        return Box.make(-jnp.inf, jnp.inf, self._obs_shape)

    def action_space(self, params) -> Box:
        return Box.make(-1.0, 1.0, (self.env.action_size,))
