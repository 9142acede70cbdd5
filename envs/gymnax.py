"""Adapter: any gymnax environment as a raw (non-resetting) seqrl environment."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import jax.numpy as jnp

from seqrl.envs.core import Environment
from seqrl.envs.spaces import Box, Discrete, Space


def _deferred(name: str) -> None:
    """Puts a stand-in for module ``name`` in ``sys.modules`` that imports the real one on
    first attribute access. gymnax imports every environment, and Pong imports seaborn (and
    with it scipy.stats) at module level for its ``render``: ~1.4 s of every start-up."""
    if name in sys.modules:
        return

    class Deferred(types.ModuleType):
        def __getattr__(self, attr: str) -> Any:
            if sys.modules.get(name) is self:
                del sys.modules[name]
            return getattr(importlib.import_module(name), attr)

    sys.modules[name] = Deferred(name)


_deferred("seaborn")
from gymnax.environments import spaces as gymnax_spaces  # noqa: E402


def convert_space(space: Any) -> Space:
    if isinstance(space, gymnax_spaces.Discrete):
        return Discrete(int(space.n))
    if isinstance(space, gymnax_spaces.Box):
        return Box.make(space.low, space.high, space.shape)
    raise TypeError(f"unsupported gymnax space {space!r}")


class GymnaxEnv(Environment):
    """Wraps ``gymnax.environments.Environment``: ``step_env`` + ``is_truncated``, no reset.

    Observations are cast to float32 (MinAtar's are boolean grids).
    """

    def __init__(self, env: Any, name: str | None = None):
        self.env = env
        self._name = name or env.name

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> Any:
        return self.env.default_params

    def reset(self, key, params):
        obs, state = self.env.reset_env(key, params)
        return jnp.asarray(obs, jnp.float32), state

    def step(self, key, state, action, params):
        obs, state, reward, terminated, info = self.env.step_env(key, state, action, params)
        truncated = self.env.is_truncated(state, params)
        info = {k: v for k, v in info.items() if k != "discount"}
        return (
            jnp.asarray(obs, jnp.float32),
            state,
            jnp.asarray(reward, jnp.float32),
            jnp.asarray(terminated, jnp.bool_),
            jnp.asarray(truncated, jnp.bool_),
            info,
        )

    def observation_space(self, params) -> Box:
        space = self.env.observation_space(params)
        if isinstance(space, gymnax_spaces.Box):
            return Box.make(space.low, space.high, space.shape)
        if isinstance(space, gymnax_spaces.Discrete):  # e.g. bandits observing an index
            return Box.make(0, space.n - 1, ())
        raise TypeError(f"unsupported gymnax observation space {space!r}")

    def action_space(self, params) -> Space:
        return convert_space(self.env.action_space(params))


def make_gymnax(env_id: str, **kwargs) -> GymnaxEnv:
    import gymnax

    env, _ = gymnax.make(env_id, **kwargs)
    return GymnaxEnv(env, name=f"gymnax/{env_id}")
