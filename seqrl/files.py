"""Files a run writes: atomic replacement, and output directories checked before any work.

A file written with :func:`write_text_atomic` is either the old one or the complete new one,
whatever kills the process (a temporary sibling is flushed, synced and renamed over it).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seqrl.errors import UserError


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def checksum(tree: Any) -> str:
    """CRC-32 of every array of ``tree`` (bytes, dtype and shape), in tree order: saved with
    checkpoints and datasets, whose array files carry none of their own."""
    crc = 0
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(jax.device_get(leaf))
        crc = zlib.crc32(f"{array.dtype.str}{array.shape}".encode(), crc)
        crc = zlib.crc32(array.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def ensure_writable_dir(directory: str | Path, problem: str) -> Path:
    """Creates ``directory`` (with parents) and writes a probe file into it; any failure is a
    ``UserError`` reading ``"{problem}: <reason>"``. Returns the directory."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{problem}: {e.strerror or e}") from None
    return directory


def ensure_free_space(directory: str | Path, needed_bytes: int, what: str) -> None:
    """A ``UserError`` if the file system of ``directory`` has less than ``needed_bytes`` free."""
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise UserError(
            f"not enough free space in {directory}: {what} need about "
            f"{_megabytes(needed_bytes)}, {_megabytes(free)} free"
        )


def _megabytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"
