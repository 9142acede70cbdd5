"""Process-wide JAX settings: the persistent compilation cache, version records."""

from __future__ import annotations

import os
from pathlib import Path

_configured = False


def cache_dir() -> Path | None:
    """Where compiled programs are cached across processes (``SEQRL_COMPILE_CACHE=0`` disables).

    Defaults to ``$XDG_CACHE_HOME/seqrl/jax`` (``~/.cache/seqrl/jax``);
    ``JAX_COMPILATION_CACHE_DIR`` wins when set.
    """
    if os.environ.get("SEQRL_COMPILE_CACHE", "1") == "0":
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqrl" / "jax"


def configure_jax() -> None:
    """Turns on the persistent compilation cache (compiles are slow on CPU; a second run of the
    same program loads it in a fraction of the time). Idempotent."""
    global _configured
    if _configured:
        return
    _configured = True
    import jax

    path = cache_dir()
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache is not worth failing a run for
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("seqrl", "jax", "jaxlib", "flax", "optax", "gymnax", "brax"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
