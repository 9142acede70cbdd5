"""The Python API for scripts and notebooks: ``seqrl.train`` and ``seqrl.load``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seqrl import runtime
from seqrl.config import resolve_config
from seqrl.errors import UserError
from seqrl.loop import RunResult, map_seeds, run, run_keys, seed_keys
from seqrl.runtime import configure_jax


def train(
    config: str | Path | dict | Any | None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool | None = None,
    overrides: list[str] | dict | None = None,
    **kw_overrides: Any,
) -> RunResult:
    """Trains an agent and returns ``RunResult(run_dir, summary)``.

    ``config`` is a YAML path, a dict or a config object; overrides use dotted keys or nested
    dicts: ``seqrl.train("configs/ppo/cartpole.yaml", total_timesteps=100_000,
    ppo={"lr": 1e-3})``, ``**{"ppo.lr": 1e-3}`` or ``overrides=["ppo.lr=1e-3"]``.
    ``resume=RUN_DIR`` continues a run from its latest checkpoint (``config`` may be None).
    """
    if kw_overrides:
        if isinstance(overrides, list):
            overrides = overrides + [f"{k}={v}" for k, v in kw_overrides.items()]
        else:
            overrides = {**(overrides or {}), **kw_overrides}
    if resume is not None:
        if run_dir is not None and Path(run_dir) != Path(resume):
            raise UserError("run_dir and resume name different directories")
        conf = resolve_config(config, overrides, resume)
        return run(conf, run_dir=resume, resume=True, progress=progress)
    conf = resolve_config(config, overrides)
    name = Path(config).stem if isinstance(config, str | Path) else conf.agent
    return run(conf, run_dir=run_dir, config_name=name, progress=progress)


@dataclasses.dataclass
class Policy:
    """A trained agent restored from a run directory (all of its seeds)."""

    run_dir: Path
    config: Any
    trainer: Any
    state: Any  # learner state with a leading seed axis
    step: int

    @property
    def params(self) -> Any:
        return self.state.params

    def evaluate(self, episodes: int = 16, seed: int = 0, deterministic: bool = True) -> np.ndarray:
        """Returns of ``episodes`` fresh episodes per trained seed: ``[num_seeds, episodes]``."""
        return self.evaluate_all(episodes, seed, deterministic)["returns"]

    def evaluate_all(
        self,
        episodes: int = 16,
        seed: int = 0,
        deterministic: bool = True,
        target_return: float | None = None,
    ) -> dict:
        """Everything the agent's evaluation reports, as numpy arrays with a leading seed axis
        (``returns``; for in-context envs also ``episode_returns[seeds, episodes, index]``).
        ``target_return`` conditions return-conditioned agents (the Decision Transformer)."""
        extra = {}
        if target_return is not None:
            if not self.trainer.return_conditioned:
                raise UserError(
                    f"--target-return applies to return-conditioned agents, not {self.config.agent}"
                )
            extra["target_return"] = float(target_return)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, seed))(seed_keys(7919, self.num_seeds))
        return self._evaluate(keys, episodes, deterministic, **extra)

    def final_evaluation(self) -> dict:
        """The run's own final evaluation again, on the restored checkpoint: the same episodes,
        keys and program as the loop's, so it reproduces ``summary.json``'s final return (a
        check that the checkpoint holds the state the run ended with)."""
        loop = self.config.loop
        keys = run_keys(self.config.seed, self.num_seeds)[1]
        return self._evaluate(keys, loop.eval_episodes, loop.eval_deterministic)

    def _evaluate(self, keys, episodes: int, deterministic: bool, **extra) -> dict:
        one = lambda s, k: self.trainer.evaluate(s, k, episodes, deterministic, **extra)
        if self.trainer.host_evaluate:  # steps host-side envs: seed by seed, unjitted
            return map_seeds(one, self.state, keys)
        # a program that runs once: compiled as the loop compiles its final evaluation
        fn = runtime.compile_run_once(runtime.lower(jax.vmap(one), self.state, keys))
        return jax.tree.map(np.asarray, fn(self.state, keys))

    @property
    def num_seeds(self) -> int:
        return int(jax.tree.leaves(self.state.update_step)[0].shape[0])

    def seed_state(self, index: int = 0) -> Any:
        return jax.tree.map(lambda x: x[index], self.state)


def load(run_dir: str | Path, step: int | None = None) -> Policy:
    """Restores the latest (or ``step``) checkpoint of a run."""
    from seqrl.runs import open_run

    configure_jax()
    run = open_run(run_dir)
    state, meta = run.restore(step)
    return Policy(run.run_dir, run.config, run.trainer, state, int(meta["updates_done"]))


__all__ = ["Policy", "RunResult", "load", "train"]
