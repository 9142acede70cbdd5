"""Checkpoints of the full learner state (params, optimizer, RNG, env and normalizer state,
step) with orbax, plus a small JSON record of where the host loop stood.

Orbax stores arrays (tensorstore/OCDBT) and JSON: nothing is ever unpickled on load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from seqrl.errors import UserError

logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs every save at INFO


class Checkpointer:
    """``run_dir/checkpoints/<update>/`` directories; ``keep=0`` keeps every one.

    ``asynchronous=True`` copies the state to host memory and writes it in a background
    thread (training goes on); orbax commits each checkpoint atomically when it is complete.
    """

    def __init__(self, directory: str | Path, keep: int = 0, asynchronous: bool = False):
        self.asynchronous = asynchronous
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None, create=True, enable_async_checkpointing=self.asynchronous
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        if not self.asynchronous:
            self.manager.wait_until_finished()

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the structure of ``target`` (arrays or ``jax.ShapeDtypeStruct``s)."""
        steps = self.steps()
        if not steps:
            raise UserError(f"no checkpoint found in {self.directory}")
        step = steps[-1] if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # orbax raises many types for damaged or mismatched files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"checkpoint {self.directory / str(step)} could not be restored: {msg[:200]}"
            ) from None
        return restored["state"], dict(restored["meta"])
