"""Locomotion task families on brax, as in the Meta-DT paper: Cheetah-Vel, Cheetah-Dir, Ant-Dir.

The body and its physics are brax's own (``halfcheetah`` / ``ant``, spring backend by default:
the fastest on CPU); the family replaces the reward with the task's, read from the velocity
brax reports for the step:

- Cheetah-Vel: ``r = -|v_x - v_goal| - 0.05 ||a||^2``, ``v_goal ~ U[0, 3]``, T = 200
  (35 training and 5 held-out goals by default).
- Cheetah-Dir: ``r = d v_x - 0.05 ||a||^2``, ``d in {-1, +1}``, T = 200. Two tasks only, so
  both are training tasks and the held-out split is empty (the paper evaluates on the two
  training directions; use ``--split train``).
- Ant-Dir: ``r = v . (cos t, sin t) + 1 - 0.5 ||a||^2`` while healthy, ``t ~ U[0, 2 pi)``,
  T = 200, 45 / 5 tasks; brax's healthy-height termination is kept.
- Hopper-Param / Walker-Param: brax's own hopper / walker2d reward and termination; the task
  scales the body: every link's mass and inertia by ``1.5^U(-3, 3)``, every geometry's
  friction by ``1.5^U(-3, 3)`` and every joint's damping by ``1.3^U(-3, 3)`` (independently
  per element), T = 200, 45 / 5 tasks. The scaled system replaces the env's for the step, the
  way brax's own domain randomization does (``DomainRandomizationVmapWrapper``); the spring
  backend reads masses, inertias and friction (joint damping acts in the generalized backend).

The task is invisible to the agent: observations are brax's (no goal in them).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.brax import BraxEnv, BraxParams
from seqrl.envs.meta.core import TaskFamily
from seqrl.envs.spaces import Box


@struct.dataclass
class LocomotionState:
    pipeline: Any  # brax.envs.base.State
    task: jax.Array
    time: jax.Array


CONTROL_COST = 0.05  # Cheetah-Vel's and Cheetah-Dir's cost per unit of ||a||^2


class BraxTaskFamily(TaskFamily):
    """A brax body whose reward depends on a hidden task (subclasses: ``sample_task`` and
    ``task_reward``)."""

    body: str = ""
    episode_length = 200

    def __init__(self, num_train: int, num_test: int, split_seed: int = 0, backend: str = "spring"):
        super().__init__(num_train, num_test, split_seed)
        self.brax = BraxEnv(self.body, backend=backend, episode_length=self.episode_length)

    def task_reward(self, task: jax.Array, metrics: dict, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def task_system(self, task: Any) -> Any:
        """The brax ``System`` of ``task`` (the body's own unless the family changes it)."""
        return self.brax.env.sys

    def _in_task(self, task: Any, fn, *args):
        """``fn(*args)`` with the brax env's system swapped for the task's (at trace time)."""
        env = self.brax.env.unwrapped
        default = env.sys
        env.sys = self.task_system(task)
        try:
            return fn(*args)
        finally:
            env.sys = default

    def reset_task(self, key, params, task):
        task = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), task)
        obs, state = self._in_task(
            task, self.brax.reset, key, BraxParams(params.max_steps_in_episode)
        )
        return obs, LocomotionState(state.pipeline, task, state.time)

    def step(self, key, state, action, params):
        del key  # brax dynamics are deterministic
        action = jnp.clip(action, -1.0, 1.0)
        nxt = self._in_task(state.task, self.brax.env.step, state.pipeline, action)
        time = state.time + 1
        metrics = {**nxt.metrics, "reward": nxt.reward}
        reward = self.task_reward(state.task, metrics, action)
        terminated = jnp.asarray(nxt.done) > 0.5
        truncated = time >= params.max_steps_in_episode
        return (
            jnp.asarray(nxt.obs, jnp.float32),
            LocomotionState(nxt, state.task, time),
            jnp.asarray(reward, jnp.float32),
            terminated,
            truncated,
            {},
        )

    def observation_space(self, params) -> Box:
        return self.brax.observation_space(params)

    def action_space(self, params) -> Box:
        return self.brax.action_space(params)


class CheetahVel(BraxTaskFamily):
    body = "halfcheetah"
    max_velocity = 3.0

    def __init__(self, num_train: int = 35, num_test: int = 5, split_seed: int = 0, **kw):
        super().__init__(num_train, num_test, split_seed, **kw)

    @property
    def name(self) -> str:
        return "meta/CheetahVel"

    def sample_task(self, key):
        return jax.random.uniform(key, (), minval=0.0, maxval=self.max_velocity)

    def task_reward(self, task, metrics, action):
        return -jnp.abs(metrics["x_velocity"] - task) - CONTROL_COST * jnp.sum(jnp.square(action))


class CheetahDir(BraxTaskFamily):
    body = "halfcheetah"

    def __init__(self, num_train: int = 2, num_test: int = 0, split_seed: int = 0, **kw):
        super().__init__(num_train, num_test, split_seed, **kw)

    @property
    def name(self) -> str:
        return "meta/CheetahDir"

    def split(self, name: str) -> Any:
        if self._all is None:  # forward and backward, alternating: both directions in any split
            n = self.num_train + self.num_test
            self._all = jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)
        return super().split(name)

    def sample_task(self, key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    def task_reward(self, task, metrics, action):
        return task * metrics["x_velocity"] - CONTROL_COST * jnp.sum(jnp.square(action))


class AntDir(BraxTaskFamily):
    body = "ant"

    def __init__(self, num_train: int = 45, num_test: int = 5, split_seed: int = 0, **kw):
        super().__init__(num_train, num_test, split_seed, **kw)

    @property
    def name(self) -> str:
        return "meta/AntDir"

    def sample_task(self, key):
        return jax.random.uniform(key, (), minval=0.0, maxval=2.0 * math.pi)

    def task_reward(self, task, metrics, action):
        forward = metrics["x_velocity"] * jnp.cos(task) + metrics["y_velocity"] * jnp.sin(task)
        return forward + metrics["reward_survive"] - 0.5 * jnp.sum(jnp.square(action))


class BodyParamFamily(BraxTaskFamily):
    """Hopper-Param / Walker-Param (see the module docstring): the task scales the body."""

    def __init__(self, num_train: int = 45, num_test: int = 5, split_seed: int = 0, **kw):
        super().__init__(num_train, num_test, split_seed, **kw)

    def sample_task(self, key):
        sys = self.brax.env.sys
        k_mass, k_inertia, k_friction, k_damping = jax.random.split(key, 4)
        scale = lambda k, base, n: base ** jax.random.uniform(k, (n,), minval=-3.0, maxval=3.0)
        links, geoms, dofs = (
            sys.link.inertia.mass.shape[0],
            sys.geom_friction.shape[0],
            sys.qd_size(),
        )
        return {
            "mass": scale(k_mass, 1.5, links),
            "inertia": scale(k_inertia, 1.5, links),
            "friction": scale(k_friction, 1.5, geoms),
            "damping": scale(k_damping, 1.3, dofs),
        }

    def task_system(self, task):
        sys = self.brax.env.sys
        inertia = sys.link.inertia.replace(
            mass=sys.link.inertia.mass * task["mass"],
            i=sys.link.inertia.i * task["inertia"][:, None, None],
        )
        return sys.replace(
            link=sys.link.replace(inertia=inertia),
            geom_friction=sys.geom_friction * task["friction"][:, None],
            dof=sys.dof.replace(damping=sys.dof.damping * task["damping"]),
        )

    def task_reward(self, task, metrics, action):
        return metrics["reward"]  # the body's own: forward progress + healthy - control


class HopperParam(BodyParamFamily):
    body = "hopper"

    @property
    def name(self) -> str:
        return "meta/HopperParam"


class WalkerParam(BodyParamFamily):
    body = "walker2d"

    @property
    def name(self) -> str:
        return "meta/WalkerParam"
