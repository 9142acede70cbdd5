"""The previous action and a first-step flag appended to the observation (popjaxrl's protocol)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqrl.envs.core import Environment, Wrapper
from seqrl.envs.spaces import Box, Discrete


class PreviousActionObservation(Wrapper):
    """Observation ``[obs (flattened), one-hot previous action, first-step flag]``.

    After ``reset`` the action part is zeros and the flag 1; after ``step(action)`` it is
    ``one_hot(action)`` and 0. Wrap the raw env (inside ``AutoReset``) so an auto-reset shows the
    reset form. POPGym's games (MineSweeper, Battleship, ...) need it: their observation alone
    does not say which tile it is about. Needs a ``Discrete`` action space.
    """

    def __init__(self, env: Environment):
        super().__init__(env)
        space = env.action_space(env.default_params)
        if not isinstance(space, Discrete):
            raise TypeError(
                f"PreviousActionObservation needs a Discrete action space; {env.name} has {space}"
            )

    def _num_actions(self, params) -> int:
        return self.env.action_space(params).n

    def _augment(self, obs: jax.Array, previous: jax.Array, first: float) -> jax.Array:
        flag = jnp.full((1,), first, jnp.float32)
        return jnp.concatenate([obs.reshape(-1).astype(jnp.float32), previous, flag])

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        return self._augment(obs, jnp.zeros((self._num_actions(params),), jnp.float32), 1.0), state

    def step(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        previous = jax.nn.one_hot(action, self._num_actions(params), dtype=jnp.float32)
        return self._augment(obs, previous, 0.0), state, reward, terminated, truncated, info

    def observation_space(self, params) -> Box:
        space = self.env.observation_space(params)
        extra = self._num_actions(params) + 1
        size = int(np.prod(space.shape)) + extra
        traced = not isinstance(space.low, np.ndarray) or not isinstance(space.high, np.ndarray)
        xp = jnp if traced else np
        low = xp.concatenate([xp.reshape(space.low, -1), xp.zeros(extra, np.float32)])
        high = xp.concatenate([xp.reshape(space.high, -1), xp.ones(extra, np.float32)])
        return Box.make(low, high, (size,))
