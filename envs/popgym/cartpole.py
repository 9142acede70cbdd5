"""POPGym's StatelessCartPole and NoisyStatelessCartPole: CartPole observed without velocities.

Definitions follow ``popgym/envs/stateless_cartpole.py`` and ``noisy_stateless_cartpole.py``
(renamed ``position_only_cartpole.py`` / ``noisy_position_only_cartpole.py`` in popgym 1.0.7,
same code), built on gymnasium's ``CartPoleEnv`` (Euler integration, 0.02 s steps, failure at
``|x| > 2.4`` or ``|theta| > 12 degrees``, initial state ~ U(-0.05, 0.05)^4).

Reward: POPGym maps gymnasium's reward ``r`` to ``-1`` if ``r == 0`` else ``1 / L``
(``L = max_steps_in_episode``: 200 / 400 / 600). Gymnasium pays ``r = 1`` on every step up to
and including the one where the pole falls and ``r = 0`` only when a terminated episode is
stepped again, so a POPGym episode returns ``length / L`` in (0, 1] and the ``-1`` appears only
when stepping past a failure (reproduced here for raw envs; never seen under ``AutoReset``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.popgym.base import PopGymEnvironment
from seqrl.envs.spaces import Box, Discrete

# gymnasium CartPole-v1 constants
GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
HALF_POLE_LENGTH = 0.5
FORCE_MAG = 10.0
TAU = 0.02
X_THRESHOLD = 2.4
THETA_THRESHOLD = 12 * 2 * math.pi / 360
OBS_HIGH = (2 * X_THRESHOLD, 2 * THETA_THRESHOLD)  # POPGym's observation-space bounds


@struct.dataclass
class StatelessCartPoleParams:
    max_steps_in_episode: int = 200


@struct.dataclass
class NoisyStatelessCartPoleParams(StatelessCartPoleParams):
    noise_sigma: float = 0.1


@struct.dataclass
class CartPoleState:
    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array
    failed: jax.Array  # the pole fell at an earlier step (gymnasium's steps_beyond_terminated)


def cartpole_dynamics(state: CartPoleState, action: jax.Array) -> CartPoleState:
    """One Euler step of gymnasium's CartPole (Barto, Sutton and Anderson 1983)."""
    force = jnp.where(action == 1, FORCE_MAG, -FORCE_MAG)
    cos, sin = jnp.cos(state.theta), jnp.sin(state.theta)
    total_mass = MASS_CART + MASS_POLE
    polemass_length = MASS_POLE * HALF_POLE_LENGTH
    temp = (force + polemass_length * state.theta_dot**2 * sin) / total_mass
    theta_acc = (GRAVITY * sin - cos * temp) / (
        HALF_POLE_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / total_mass)
    )
    x_acc = temp - polemass_length * theta_acc * cos / total_mass
    return state.replace(
        x=state.x + TAU * state.x_dot,
        x_dot=state.x_dot + TAU * x_acc,
        theta=state.theta + TAU * state.theta_dot,
        theta_dot=state.theta_dot + TAU * theta_acc,
    )


class StatelessCartPole(PopGymEnvironment):
    """CartPole observing ``[x, theta]`` only; reward ``1/L`` per step (see the module doc).

    ``terminated`` when the pole falls or the cart leaves the track, ``truncated`` after
    ``max_steps_in_episode`` steps (both can hold on the same step, as in POPGym).
    """

    def __init__(self, max_steps_in_episode: int = 200, name: str | None = None):
        super().__init__(self._make_params(int(max_steps_in_episode)), name)

    def _make_params(self, max_steps_in_episode: int):
        return StatelessCartPoleParams(max_steps_in_episode=max_steps_in_episode)

    def reset(self, key, params):
        key_init, key_obs = jax.random.split(key)
        x, x_dot, theta, theta_dot = jax.random.uniform(key_init, (4,), minval=-0.05, maxval=0.05)
        zero = jnp.zeros((), jnp.int32)
        state = CartPoleState(x, x_dot, theta, theta_dot, zero, jnp.zeros((), bool))
        return self._observe(key_obs, state, params), state

    def step(self, key, state, action, params):
        next_state = cartpole_dynamics(state, action)
        fallen = (jnp.abs(next_state.x) > X_THRESHOLD) | (
            jnp.abs(next_state.theta) > THETA_THRESHOLD
        )
        # gymnasium pays 0 (POPGym: -1) only for stepping again after the pole has fallen
        reward = jnp.where(fallen & state.failed, -1.0, 1.0 / params.max_steps_in_episode)
        time = state.time + 1
        next_state = next_state.replace(time=time, failed=state.failed | fallen)
        truncated = time >= params.max_steps_in_episode
        obs = self._observe(key, next_state, params)
        return obs, next_state, reward.astype(jnp.float32), fallen, truncated, {}

    def _observe(self, key, state, params):
        return jnp.stack([state.x, state.theta]).astype(jnp.float32)

    def observation_space(self, params) -> Box:
        high = jnp.asarray(OBS_HIGH, jnp.float32)
        return Box.make(-high, high, (2,))

    def action_space(self, params) -> Discrete:
        return Discrete(2)


class NoisyStatelessCartPole(StatelessCartPole):
    """StatelessCartPole whose observations (the reset one included) get Gaussian noise of
    standard deviation ``noise_sigma`` (0.1 / 0.2 / 0.3), clipped to ``[-4.8, 4.8] x
    [-0.419, 0.419]`` (POPGym's observation-space bounds)."""

    def __init__(
        self, max_steps_in_episode: int = 200, noise_sigma: float = 0.1, name: str | None = None
    ):
        self._noise_sigma = float(noise_sigma)
        super().__init__(max_steps_in_episode, name)

    def _make_params(self, max_steps_in_episode: int):
        return NoisyStatelessCartPoleParams(
            max_steps_in_episode=max_steps_in_episode, noise_sigma=self._noise_sigma
        )

    def _observe(self, key, state, params):
        obs = super()._observe(key, state, params)
        noise = params.noise_sigma * jax.random.normal(key, obs.shape)
        high = jnp.asarray(OBS_HIGH, jnp.float32)
        return jnp.clip(obs + noise, -high, high).astype(jnp.float32)
