"""Trials of a task family for online in-context agents (e.g. S5-PPO across tasks).

A *trial* is ``episodes_per_trial`` episodes of ONE task drawn from ``params.tasks``; between
the episodes of a trial the family is reset to the same task without ending the trial, so a
recurrent agent keeps its memory and can infer the task from rewards; the trial ends
(``terminated``) after its last episode and the next trial draws a new task. Observations are
``[obs, previous action, previous reward, inner-episode-start flag]``. ``info`` carries
``inner_episode_done``, ``inner_episode_return`` and ``episode_index`` like the in-context
projection envs (``seqrl.envs.incontext``), so evaluation reports the return per episode index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.core import Environment
from seqrl.envs.incontext import advance_trial
from seqrl.envs.meta.core import FamilyParams, TaskFamily, num_tasks, task_at
from seqrl.envs.spaces import Box, Discrete
from seqrl.errors import UserError


@struct.dataclass
class TrialState:
    env_state: object
    task: object
    episode_index: jax.Array
    inner_return: jax.Array
    prev_action: jax.Array
    prev_reward: jax.Array
    inner_first: jax.Array


class TaskTrials(Environment):
    """``episodes_per_trial`` episodes per task of ``family`` (raw: trial = episode)."""

    def __init__(self, family: TaskFamily, episodes_per_trial: int):
        if not isinstance(episodes_per_trial, int) or episodes_per_trial < 1:
            raise UserError(
                f"episodes_per_trial must be an integer >= 1, got {episodes_per_trial!r}"
            )
        self.family = family
        self.episodes_per_trial = episodes_per_trial
        space = family.action_space(family.default_params)
        self._discrete = isinstance(space, Discrete)
        self._action_width = space.n if self._discrete else int(space.shape[0])

    def __getattr__(self, name):  # split, sample_task, ... of the family
        return getattr(self.family, name)

    @property
    def name(self) -> str:
        return f"{self.family.name}-trials"

    def params_for(self, tasks) -> FamilyParams:
        return self.family.params_for(tasks).replace(episodes_per_trial=self.episodes_per_trial)

    @property
    def default_params(self) -> FamilyParams:
        return self.params_for(self.family.split("train"))

    def eval_params(self, params: FamilyParams) -> FamilyParams:
        return params.replace(tasks=self.family.split("test"))

    def single_task_params(self, tasks) -> FamilyParams:
        return self.params_for(jax.tree.map(lambda x: x[:, None], tasks))

    def _observe(self, obs, state: TrialState) -> jax.Array:
        prev = (
            jax.nn.one_hot(state.prev_action, self._action_width)
            if self._discrete
            else state.prev_action
        )
        extra = jnp.stack([state.prev_reward, state.inner_first.astype(jnp.float32)])
        return jnp.concatenate([obs.reshape(-1), prev, extra]).astype(jnp.float32)

    def reset(self, key, params):
        key_task, key_env = jax.random.split(key)
        task = task_at(params.tasks, jax.random.randint(key_task, (), 0, num_tasks(params.tasks)))
        obs, env_state = self.family.reset_task(key_env, params, task)
        state = TrialState(
            env_state=env_state,
            task=task,
            episode_index=jnp.zeros((), jnp.int32),
            inner_return=jnp.zeros(()),
            prev_action=(
                jnp.zeros((), jnp.int32) if self._discrete else jnp.zeros(self._action_width)
            ),
            prev_reward=jnp.zeros(()),
            inner_first=jnp.ones((), jnp.bool_),
        )
        return self._observe(obs, state), state

    def step(self, key, state, action, params):
        key_step, key_reset = jax.random.split(key)
        stepped = self.family.step(key_step, state.env_state, action, params)
        reset = self.family.reset_task(key_reset, params, state.task)
        obs, new_state, trial_over, info = advance_trial(
            state, action, stepped, reset, self.episodes_per_trial
        )
        return (
            self._observe(obs, new_state),
            new_state,
            stepped[2],
            trial_over,
            jnp.zeros((), jnp.bool_),
            info,
        )

    def observation_space(self, params) -> Box:
        inner = self.family.observation_space(params).shape
        size = int(jnp.prod(jnp.asarray(inner))) + self._action_width + 2
        return Box.make(-jnp.inf, jnp.inf, (size,))

    def action_space(self, params):
        return self.family.action_space(params)
