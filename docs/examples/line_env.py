"""A new environment in ~40 lines: walk along a line to a goal (the guide's example).

Train PPO on it from the CLI without registering anything:

    seqrl train configs/ppo/cartpole.yaml env=docs.examples.line_env:Line total_timesteps=20000

or register a name from Python: ``seqrl.envs.register("custom/Line-v0", Line)``.
"""

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs import Box, Discrete, Environment


@struct.dataclass
class LineParams:
    goal: float = 1.0  # the task: where the goal is (meta-RL samples these)
    max_steps_in_episode: int = 20


@struct.dataclass
class LineState:
    position: jax.Array
    time: jax.Array


class Line(Environment):
    """Start at 0; actions 0/1/2 move by -0.1/0/+0.1; reward -|position - goal|; the episode
    terminates at the goal and is truncated after ``max_steps_in_episode`` steps."""

    @property
    def default_params(self) -> LineParams:
        return LineParams()

    def reset(self, key, params):
        state = LineState(jnp.zeros(()), jnp.zeros((), jnp.int32))
        return self._obs(state, params), state

    def step(self, key, state, action, params):
        position = state.position + 0.1 * (action - 1)
        state = LineState(position, state.time + 1)
        distance = jnp.abs(position - params.goal)
        terminated = distance < 0.05
        truncated = state.time >= params.max_steps_in_episode
        return self._obs(state, params), state, -distance, terminated, truncated, {}

    def _obs(self, state, params):
        return jnp.stack([state.position, params.goal]).astype(jnp.float32)

    def observation_space(self, params) -> Box:
        return Box.make(-jnp.inf, jnp.inf, (2,))

    def action_space(self, params) -> Discrete:
        return Discrete(3)
