"""Checkpoints of the full learner state (params, optimizer, RNG, env and normalizer state,
step) with orbax, plus a small JSON record of where the host loop stood.

Safe and crash-proof by construction:

- orbax writes each checkpoint into a temporary directory and renames it into place when it is
  complete, so a run killed mid-save leaves the previous checkpoints intact (the leftover
  temporary directory is removed when the run is resumed);
- a CRC-32 of the arrays is saved with them and checked on restore (orbax's array files carry
  no checksum: a flipped bit would otherwise restore silently);
- orbax stores arrays (tensorstore/OCDBT) and JSON, and its JSON files are parsed here first:
  nothing is ever unpickled, and a damaged file is one error that names it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from seqrl.errors import UserError
from seqrl.files import checksum

# orbax logs every save at INFO and damaged files at ERROR: the errors raised here say it once
logging.getLogger("absl").setLevel(logging.CRITICAL)


def _quiet_failed_restore(hook: Callable) -> Callable:
    """When one read of a restore fails, orbax closes its event loop while tensorstore still
    completes the others: their callbacks fail with "Event loop is closed" and the abandoned
    coroutines raise when collected, each printed as an "Exception ignored" traceback. The
    restore already raised the error that matters: this hook drops those (and passes on
    everything else)."""

    def quiet(unraisable) -> None:
        exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        hook(unraisable)

    return quiet


sys.unraisablehook = _quiet_failed_restore(sys.unraisablehook)

# orbax's JSON files inside a checkpoint directory (relative paths; globs allowed)
_JSON_FILES = (
    "_CHECKPOINT_METADATA",
    "meta/metadata",
    "state/_METADATA",
    "state/_sharding",
    "state/array_metadatas/*",
)


def _warn(message: str) -> None:
    print(f"seqrl: warning: {message}", file=sys.stderr)


class Checkpointer:
    """``run_dir/checkpoints/<update>/`` directories; ``keep=0`` keeps every one.

    ``asynchronous=True`` copies the state to host memory and writes it in a background
    thread (training goes on); orbax commits each checkpoint atomically when it is complete.
    ``clean_up=True`` (the run writing the checkpoints, never a reader: a running training may
    be saving) removes the temporary directories of saves that a killed process left behind.
    """

    def __init__(
        self,
        directory: str | Path,
        keep: int = 0,
        asynchronous: bool = False,
        clean_up: bool = False,
    ):
        self.asynchronous = asynchronous
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"{self.directory} is not a checkpoint directory (it is a file)")
        # under jax.distributed, process 0 alone writes (the loop hands it gathered arrays)
        alone = {}
        if jax.process_count() > 1:
            self.directory.mkdir(parents=True, exist_ok=True)  # orbax will not, in this mode
            alone["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None,
            create=not alone,
            enable_async_checkpointing=self.asynchronous,
            cleanup_tmp_directories=clean_up,
            **alone,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, meta: dict) -> None:
        # host copies first: orbax writes numpy arrays with ~40% less work than device arrays
        # (no replica or sharding bookkeeping), and a save runs beside the next chunk
        state = jax.device_get(state)
        meta = {**meta, "checksum": checksum(state)}
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

    def restore(
        self,
        target: Any,
        step: int | None = None,
        log: Callable[[str], None] = _warn,
    ) -> tuple[Any, dict]:
        """Restores into the structure of ``target`` (arrays or ``jax.ShapeDtypeStruct``s).

        Without ``step``, the newest checkpoint that restores: a damaged newer one is reported
        through ``log`` (one line) and skipped.
        """
        steps = self.steps()
        if not steps:
            raise UserError(f"no checkpoint found in {self.directory}")
        if step is not None:
            if step not in steps:
                raise UserError(
                    f"no checkpoint {step} in {self.directory} (there are: "
                    f"{', '.join(map(str, steps))})"
                )
            return self._restore(target, step)
        failures: list[UserError] = []
        for candidate in reversed(steps):
            try:
                state, meta = self._restore(target, candidate)
            except UserError as e:
                failures.append(e)
                continue
            if failures:
                more = f" (and {len(failures) - 1} newer)" if len(failures) > 1 else ""
                log(f"{failures[0]}{more}; using checkpoint {candidate} instead")
            return state, meta
        if len(failures) > 1:
            raise UserError(f"{failures[0]} (and no older checkpoint restores either)")
        raise failures[0]

    def set_aside(self, steps: list[int]) -> Path:
        """Moves the checkpoints ``steps`` (damaged ones) out of the way, into a sibling
        ``<directory>-damaged/``, so that a resumed run can write those steps again."""
        self.wait()
        aside = self.directory.with_name(self.directory.name + "-damaged")
        aside.mkdir(exist_ok=True)
        for step in steps:
            target, i = aside / str(step), 1
            while target.exists():
                target, i = aside / f"{step}-{i}", i + 1
            shutil.move(self.directory / str(step), target)
        self.manager.reload()
        return aside

    def _restore(self, target: Any, step: int) -> tuple[Any, dict]:
        path = self.directory / str(step)
        _check_files(path)
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
            raise UserError(f"checkpoint {path} could not be restored: {msg[:200]}") from None
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.pop("checksum", None)
        if expected is not None and checksum(state) != expected:
            raise UserError(
                f"checkpoint {path} is damaged: its arrays do not match the checksum saved "
                "with them"
            )
        return state, meta


def _check_files(path: Path) -> None:
    """Parses orbax's JSON files (with ``json``, so a damaged one is an error naming it)."""
    if not path.is_dir():
        raise UserError(f"checkpoint {path} is not a directory")
    for pattern in _JSON_FILES:
        for file in sorted(path.glob(pattern)):
            try:
                json.loads(file.read_bytes())
            except ValueError:  # JSON and Unicode errors alike
                raise UserError(
                    f"checkpoint file {file} is damaged or not an orbax file: not valid JSON"
                ) from None
            except OSError as e:
                raise UserError(f"checkpoint file {file} cannot be read: {e.strerror}") from None
