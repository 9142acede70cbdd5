"""The agent contract: what every agent's ``make_trainer(config)`` returns.

A :class:`Trainer` holds pure functions for ONE seed (the loop vmaps them over seeds) and a few
typed, optional capabilities the framework's commands read instead of asking for an agent by
name:

- ``actor`` (:class:`Actor`): the agent acts in a JAX env step by step, so ``seqrl collect``
  can roll its policy out (PPO);
- ``meta`` (:class:`MetaEvaluation`): the agent has few-shot / zero-shot protocols on a task
  family's held-out tasks, so ``seqrl eval-meta`` can score it (Meta-DT, Prompt-DT, in-context
  PPO);
- ``return_conditioned``: ``evaluate`` takes a ``target_return`` (the Decision Transformer);
- ``per_task`` (:class:`PerTask`): one learner per task of a family, vmapped inside each seed;
- ``internals``: the agent's own typed pieces (its network, loss parts) for tests and
  notebooks; the framework never reads them.

This module imports nothing of seqrl but the data-axis type, so an agent depends on the loop's
contract, not on the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax

from seqrl.distributed import DataAxis

# (carry, obs[B], first[B], key) -> (carry, action[B]); see seqrl.evaluate.rollout
PolicyStep = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Actor:
    """How a trained policy acts in a vectorized JAX env (all pure, for one seed's state).

    ``env(state, num_envs) -> (venv, env_params)``: the env to act in (evaluation settings:
    no reward scaling, observation statistics frozen, held-out tasks where there is a split);
    ``policy(state, deterministic) -> PolicyStep``; ``initial_carry(num_envs)``: the policy's
    carry before the first step."""

    env: Callable[[Any, int], tuple[Any, Any]]
    policy: Callable[[Any, bool], PolicyStep]
    initial_carry: Callable[[int], Any]


class MetaEvaluation(Protocol):
    """Few-shot and zero-shot evaluation on a task family's tasks.

    ``protocols``: the protocols the agent supports (the first is its default);
    ``evaluate(state, key, split, mode, protocol, rounds) -> {"returns": [tasks, episodes]}``
    for one seed (jittable unless the trainer's ``host_evaluate`` is set), ``mode`` one of
    ``zero-shot`` / ``few-shot``. A protocol the run cannot serve raises ``UserError``."""

    protocols: tuple[str, ...]

    def evaluate(
        self, state: Any, key: jax.Array, split: str, mode: str, protocol: str, rounds: int
    ) -> dict: ...


@dataclasses.dataclass(frozen=True)
class PerTask:
    """A run of one learner per task: the learners' shared :class:`Trainer` and their count
    (the learner state has a leading task axis of this length inside each seed)."""

    single: Trainer
    num_tasks: int


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What an agent gives the loop (all functions are pure, for one seed).

    ``init(key) -> state``; ``update(state) -> (state, metrics)`` where metrics is a dict of
    scalars including ``episode_return`` (NaN when no episode ended), the loss (``loss`` and/or
    ``*_loss``) and the gradient norm ``grad_norm`` (the loop stops on a non-finite one, or on
    a non-finite ``state.params``); ``evaluate(state, key, num_episodes, deterministic) ->
    {"returns": [num_episodes], ...}`` (in-context envs add ``"episode_returns":
    [num_episodes, episodes_per_trial]``; a return-conditioned agent takes ``target_return``).
    """

    init: Callable[[jax.Array], Any]
    update: Callable[..., tuple[Any, dict]]
    evaluate: Callable[..., dict]
    num_updates: int
    steps_per_update: int
    # what an update consumes: "env_steps" (online) or "samples" (offline, from `data`)
    unit: str = "env_steps"
    # device arrays every update reads (an offline dataset): passed to ``update(state, data)``
    # as an argument of the compiled program, never baked into it or checkpointed
    data: Any = None
    # True when ``evaluate`` steps a host-side env (Meta-World) and so cannot be jitted: the
    # loop calls it seed by seed on concrete states
    host_evaluate: bool = False
    # the axis sharded across devices when they do not divide num_seeds (PPO's env batch);
    # None: only the seeds can be sharded (see seqrl/distributed.py)
    data_axis: DataAxis | None = None
    # capabilities (see the module docstring); None / False: the agent has none
    actor: Actor | None = None
    meta: MetaEvaluation | None = None
    return_conditioned: bool = False
    per_task: PerTask | None = None
    internals: Any = None

    @property
    def single(self) -> Trainer:
        """The trainer of ONE learner (a per-task run's learners share it)."""
        return self.per_task.single if self.per_task else self


def train_fn(trainer: Trainer) -> Callable[[jax.Array], tuple[Any, dict]]:
    """``train(key) -> (state, metrics[num_updates])``: the whole run in one jittable call."""

    def train(key: jax.Array):
        state = trainer.init(key)
        step = update_fn(trainer, trainer.data)
        return jax.lax.scan(lambda s, _: step(s), state, None, trainer.num_updates)

    return train


def update_fn(trainer: Trainer, data: Any) -> Callable[[Any], tuple[Any, dict]]:
    """``update(state)`` with the trainer's dataset (if any) bound as ``data``."""
    if trainer.data is None:
        return trainer.update
    return lambda state: trainer.update(state, data)
