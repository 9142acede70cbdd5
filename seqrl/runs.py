"""A trained run read back from its directory: its saved config, its agent's trainer and its
kept checkpoints. ``seqrl.load``, ``seqrl collect`` and ``seqrl eval-meta`` all open runs here.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax

from seqrl.errors import UserError
from seqrl.trainer import Trainer


@dataclasses.dataclass
class Run:
    """A run directory's config, trainer and kept checkpoints (``steps``, ascending)."""

    run_dir: Path
    config: Any
    trainer: Trainer
    steps: list[int]
    checkpointer: Any
    abstract: Any  # the stacked learner states' shapes, [num_seeds, ...]

    def restore(self, step: int | None = None) -> tuple[Any, dict]:
        """Every seed's learner state at ``step`` (default: the latest that restores) and the
        loop's record of that checkpoint."""
        return self.checkpointer.restore(self.abstract, step)

    def state(self, step: int, seed_index: int = 0) -> Any:
        """One seed's learner state at ``step``."""
        states, _ = self.restore(step)
        return jax.tree.map(lambda x: x[seed_index], states)

    @property
    def num_tasks(self) -> int | None:
        """Per-task runs (``tasks`` set): how many learners, one per task; else None."""
        per_task = self.trainer.per_task
        return None if per_task is None else per_task.num_tasks

    @functools.cached_property
    def family(self) -> Any:
        """The run's env as built from its config, without wrappers (a task family for meta
        runs), built once."""
        from seqrl.envs import make_raw

        return make_raw(self.config.env, **self.config.env_kwargs)

    @property
    def observed_task_width(self) -> int:
        """Goal-conditioned runs (``env_kwargs.observe_task``): how many trailing entries of each
        observation are the true task (:class:`seqrl.envs.meta.TaskObserved`); else 0."""
        if not self.config.env_kwargs.get("observe_task"):
            return 0
        return self.family.task_width

    def task_indices(self) -> list[int]:
        """Per-task runs: each learner's task as an index into the family's ``split("all")``
        (training tasks first, then test tasks)."""
        start = self.family.num_train if self.config.tasks == "test" else 0
        return list(range(start, start + self.num_tasks))


def open_run(run_dir: str | Path, config: Any = None) -> Run:
    """The run in ``run_dir`` (``config``: its saved config, if already read); one
    ``UserError`` line when it is not a run directory or keeps no checkpoint."""
    from seqrl import config as cfg
    from seqrl.checkpoint import Checkpointer
    from seqrl.loop import seed_keys

    run_dir = Path(run_dir)
    conf = cfg.resolve_config(None, None, resume=run_dir) if config is None else config
    trainer = cfg.agent_module(conf.agent).make_trainer(conf)
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"run {run_dir} has no checkpoints/ directory")
    checkpointer = Checkpointer(run_dir / "checkpoints")
    steps = [int(s) for s in checkpointer.steps()]
    if not steps:
        raise UserError(f"run {run_dir} has no checkpoint")
    abstract = jax.eval_shape(jax.vmap(trainer.init), seed_keys(conf.seed, conf.num_seeds))
    return Run(run_dir, conf, trainer, steps, checkpointer, abstract)
