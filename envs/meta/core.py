"""Task families: JAX envs whose params carry the task, with fixed, seeded train/test splits.

A family samples tasks (``sample_task(key) -> task pytree``) and runs an episode of one task
(``reset_task(key, params, task)``; ``step`` reads the task from the env state). Its params
hold a *set* of tasks, ``params.tasks`` (stacked, leading axis = task), and ``reset`` draws one
of them uniformly, so one params pytree can mean "one task" (a set of one), "the training
split" or "the test split":

    family.split("train")          # the training tasks, stacked (deterministic, seeded)
    family.params_for(tasks)       # params whose reset draws from ``tasks``
    family.default_params          # the training split
    family.eval_params(params)     # the test split (held out; evaluation uses it)

The splits come from ``split_seed`` only: ``num_train + num_test`` tasks are drawn from it once,
the first ``num_train`` train and the rest test, so they are reproducible and disjoint.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.core import Environment, Wrapper
from seqrl.envs.spaces import Box
from seqrl.errors import UserError

SPLITS = ("train", "test", "all")


@struct.dataclass
class FamilyParams:
    tasks: Any  # task pytree, leading axis = task
    max_steps_in_episode: int = struct.field(pytree_node=False, default=200)
    # 0: plain episodes; n > 0: trials of n episodes of one task (see envs/meta/trials.py)
    episodes_per_trial: int = struct.field(pytree_node=False, default=0)


def task_at(tasks: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[index], tasks)


def num_tasks(tasks: Any) -> int:
    return int(jax.tree.leaves(tasks)[0].shape[0])


class TaskFamily(Environment):
    """Base class of task families (see the module docstring). Subclasses implement
    ``sample_task``, ``reset_task``, ``step``, the spaces and set ``episode_length``."""

    episode_length: int = 200

    def __init__(self, num_train: int, num_test: int, split_seed: int = 0):
        counts = (num_train, num_test)
        counts_ok = all(isinstance(n, int) and not isinstance(n, bool) for n in counts)
        if not counts_ok or num_train < 1 or num_test < 0:
            raise UserError(
                f"{type(self).__name__}: num_train must be an integer >= 1 and num_test an "
                f"integer >= 0, got {num_train!r} / {num_test!r}"
            )
        self.num_train = num_train
        self.num_test = num_test
        self.split_seed = split_seed
        self._all = None

    # -- tasks ----------------------------------------------------------------------------------

    def sample_task(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def reset_task(self, key: jax.Array, params: Any, task: Any) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def split(self, name: str) -> Any:
        """The tasks of split ``name`` (``train``, ``test`` or ``all`` = train then test)."""
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        if self._all is None:
            keys = jax.random.split(
                jax.random.PRNGKey(self.split_seed), self.num_train + self.num_test
            )
            self._all = jax.vmap(self.sample_task)(keys)
        if name == "all":
            return self._all
        part = slice(0, self.num_train) if name == "train" else slice(self.num_train, None)
        return jax.tree.map(lambda x: x[part], self._all)

    def params_for(self, tasks: Any) -> FamilyParams:
        return FamilyParams(tasks=tasks, max_steps_in_episode=self.episode_length)

    @property
    def default_params(self) -> FamilyParams:
        return self.params_for(self.split("train"))

    def eval_params(self, params: FamilyParams) -> FamilyParams:
        """The held-out split: evaluation runs on tasks never used in training."""
        return params.replace(tasks=self.split("test"))

    def single_task_params(self, tasks: Any) -> FamilyParams:
        """Params of each task alone, stacked (leading axis = task): vmap over them to run one
        agent or one rollout per task."""
        return self.params_for(jax.tree.map(lambda x: x[:, None], tasks))

    # -- the protocol ---------------------------------------------------------------------------

    def reset(self, key, params):
        task, key_reset = draw_task(key, params)
        return self.reset_task(key_reset, params, task)


def draw_task(key: jax.Array, params: Any) -> tuple[Any, jax.Array]:
    """One of ``params.tasks``, uniformly (the episode's task), and the key left for the reset."""
    key_task, key_reset = jax.random.split(key)
    index = jax.random.randint(key_task, (), 0, num_tasks(params.tasks))
    return task_at(params.tasks, index), key_reset


def features_of(task: Any) -> jax.Array:
    """One task (no leading axis) as a flat float vector: its leaves, raveled, concatenated."""
    return jnp.concatenate([jnp.asarray(x, jnp.float32).reshape(-1) for x in jax.tree.leaves(task)])


@struct.dataclass
class ObservedState:
    inner: Any
    features: jax.Array  # the episode's task, flat (``features_of``)


class TaskObserved(Wrapper):
    """A family whose observations end with the episode's true task (``features_of``): the
    input of a goal-conditioned data generator (``env_kwargs: {observe_task: true}``), one
    learner over all training tasks. The task is privileged: ``seqrl collect`` strips it from
    the recorded observations (``task_width``), so no offline agent ever sees it."""

    def __init__(self, family: TaskFamily):
        super().__init__(family)
        self.task_width = int(features_of(task_at(family.split("all"), 0)).shape[0])

    def reset(self, key, params):
        task, key_reset = draw_task(key, params)
        obs, inner = self.env.reset_task(key_reset, params, task)
        features = features_of(task)
        return self._observe(obs, features), ObservedState(inner, features)

    def step(self, key, state, action, params):
        obs, inner, reward, terminated, truncated, info = self.env.step(
            key, state.inner, action, params
        )
        state = ObservedState(inner, state.features)
        return self._observe(obs, state.features), state, reward, terminated, truncated, info

    @staticmethod
    def _observe(obs, features):
        return jnp.concatenate([obs.reshape(-1).astype(jnp.float32), features])

    def observation_space(self, params) -> Box:
        inner = self.env.observation_space(params)
        width = int(math.prod(inner.shape)) + self.task_width
        return Box.make(-jnp.inf, jnp.inf, (width,))
