"""PointRobot (the 2-D navigation family of the Meta-DT paper, Wang et al. 2024).

A point starts at the origin and must reach a goal ``g ~ U[-1, 1]^2`` it cannot see; each step
moves it by ``0.1 * clip(a, -1, 1)`` (the reference's ``clip(a, -0.1, 0.1)`` with the action
rescaled to [-1, 1], so policies need no special output scale) and pays ``-||s' - g||``.
Episodes last ``T = 20`` steps (time-limit truncation, never termination). 45 training and 5
test goals (``split_seed`` 0). Reference returns for this distribution: oracle about -2.37,
standing still about -15.3, uniform random actions about -15.9.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.meta.core import TaskFamily
from seqrl.envs.spaces import Box

STEP_SIZE = 0.1


@struct.dataclass
class PointRobotState:
    pos: jax.Array
    goal: jax.Array
    time: jax.Array


class PointRobot(TaskFamily):
    episode_length = 20

    def __init__(self, num_train: int = 45, num_test: int = 5, split_seed: int = 0):
        super().__init__(num_train, num_test, split_seed)

    @property
    def name(self) -> str:
        return "meta/PointRobot"

    def sample_task(self, key):
        return jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)

    def reset_task(self, key, params, task):
        state = PointRobotState(
            jnp.zeros(2), jnp.asarray(task, jnp.float32), jnp.zeros((), jnp.int32)
        )
        return state.pos, state

    def step(self, key, state, action, params):
        pos = state.pos + STEP_SIZE * jnp.clip(action, -1.0, 1.0)
        reward = -jnp.linalg.norm(pos - state.goal)
        time = state.time + 1
        state = state.replace(pos=pos, time=time)
        truncated = time >= params.max_steps_in_episode
        return pos, state, reward, jnp.zeros((), jnp.bool_), truncated, {}

    def oracle_action(self, state: PointRobotState) -> jax.Array:
        """The best action: straight at the goal, full speed until within one step."""
        delta = state.goal - state.pos
        return jnp.clip(delta / STEP_SIZE, -1.0, 1.0)

    def observation_space(self, params) -> Box:
        return Box.make(-jnp.inf, jnp.inf, (2,))

    def action_space(self, params) -> Box:
        return Box.make(-1.0, 1.0, (2,))
