"""Process-wide JAX settings: the persistent compilation cache, version records, and the loop's
way to build a program: :func:`lower` traces it (with JAX's random numbers made cheaper on CPU
where that is safe), :func:`compile` compiles it (with cheaper options for a program that runs
once)."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    same program loads it in a fraction of the time). Programs that compiled in under 0.5 s are
    not kept unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise (the test
    suite sets 0). Idempotent."""
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
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # JAX's own knob wins
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


# ---------------------------------------------------------------------------------------------
# Threefry on CPU
# ---------------------------------------------------------------------------------------------
#
# JAX lowers its Threefry hash for CPU as a 5-iteration while loop (to keep the program small);
# on other platforms the 20 rounds are unrolled. The loop costs XLA:CPU a loop of kernels for
# every random call, and a PPO rollout step makes five (the policy's sample, the key splits,
# the env's reset): the unrolled rounds fuse into one kernel. The bits are the same, only the
# program differs. XLA:CPU's runtime can hang on programs with LAPACK custom calls (a vmapped
# orthogonal initialization), and the unrolled rounds make that likelier (the runs that hung:
# docs/benchmarks.md), so :func:`lower` keeps JAX's loop for any program with a custom call
# other than a sharding annotation.

_ANNOTATIONS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"})
_CUSTOM_CALL = re.compile(r"custom_call @([\w.$-]+)")


def _threefry_lowerings() -> tuple[Any, Any, Any] | None:
    """``(registry, primitive, unrolled rule)``, or None where this JAX has no such internals
    (then programs keep JAX's own lowering)."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        registry = mlir._platform_specific_lowerings["cpu"]
        primitive, rule = threefry.threefry2x32_p, threefry._threefry2x32_lowering_rule
        registry[primitive].rule  # noqa: B018  (the entry exists and has the expected shape)
    except (ImportError, AttributeError, KeyError):
        return None
    return registry, primitive, rule


@contextlib.contextmanager
def unrolled_threefry() -> Iterator[bool]:
    """Within the block, programs traced for CPU get the unrolled Threefry lowering; yields
    whether it is in effect. Not thread-safe: lowerings are global to the process."""
    found = _threefry_lowerings()
    if found is None:
        yield False
        return
    registry, primitive, rule = found
    saved = registry[primitive]
    registry[primitive] = type(saved)(rule, inline=saved.inline)
    try:
        yield True
    finally:
        registry[primitive] = saved


def custom_calls(lowered: Any) -> set[str]:
    """The custom-call targets of a lowered program, sharding annotations left out."""
    return set(_CUSTOM_CALL.findall(lowered.as_text())) - _ANNOTATIONS


def lower(fn: Callable, *args: Any, run_once: bool = False, **jit_kwargs: Any) -> Any:
    """``jax.jit(fn, **jit_kwargs).lower(*args)``, with Threefry unrolled on CPU unless the
    program makes a custom call (see the note above :func:`unrolled_threefry`).

    ``run_once``: the program runs once (an initialization), so its speed does not matter:
    it keeps JAX's lowering, traced once (a hot program with a custom call is traced twice, to
    find the call and then without the unrolled rounds)."""
    import jax

    jitted = jax.jit(fn, **jit_kwargs)
    with gc_paused():
        if run_once or jax.default_backend() != "cpu":
            return jitted.lower(*args)
        with unrolled_threefry() as unrolled:
            lowered = jitted.lower(*args)
        if not unrolled or not custom_calls(lowered):
            return lowered

        def again(*a: Any) -> Any:  # a new function: JAX caches lowerings by jaxpr
            return fn(*a)

        return jax.jit(again, **jit_kwargs).lower(*args)


_gc_lock = threading.Lock()
_gc_pauses = 0  # how many gc_paused blocks are open (in any thread)
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off within the block (and back on after the last such
    block, if it was on before the first): tracing a program allocates many objects, and the
    collections they set off slow the trace (docs/benchmarks.md). Reference counting still
    frees everything that is not in a cycle; a collection runs as usual afterwards."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


# XLA's options for a program that runs once or a few times (an initialization, the final
# evaluation): XLA's backend optimization level 1 (its default is 3). On CPU this compiles
# PPO's init and evaluation with less CPU time and bit-identical results in every config
# checked (tests/test_runtime.py checks PPO's; measurements in docs/benchmarks.md).
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 1}
_LEVEL = "xla_backend_optimization_level"


def xla_flag(flags: str, name: str) -> str | None:
    """The value of ``--name=value`` in an ``XLA_FLAGS`` string (the last one wins), or None."""
    value = None
    for flag in flags.split():
        key, _, rest = flag.lstrip("-").partition("=")
        if key == name:
            value = rest
    return value


def with_xla_flag(flags: str, name: str, value: str | None) -> str:
    """``flags`` (an ``XLA_FLAGS`` string) with ``--name=value`` replacing any ``--name=...``
    (``value`` None: without the flag)."""
    kept = [f for f in flags.split() if f.lstrip("-").partition("=")[0] != name]
    return " ".join(kept if value is None else [*kept, f"--{name}={value}"])


def compile_run_once(lowered: Any) -> Any:
    """Compiles ``lowered`` with :data:`RUN_ONCE_OPTIONS` (on CPU; elsewhere as JAX does). A
    lower optimization level asked for in ``XLA_FLAGS`` (the test suite's 0) is kept."""
    import jax

    if jax.default_backend() != "cpu":
        return lowered.compile()
    asked = xla_flag(os.environ.get("XLA_FLAGS", ""), _LEVEL)
    if asked is not None and asked.isdigit() and int(asked) <= RUN_ONCE_OPTIONS[_LEVEL]:
        return lowered.compile()
    return lowered.compile(compiler_options=RUN_ONCE_OPTIONS)


def compile(lowered: Any, run_once: bool) -> Any:
    """Compiles a program :func:`lower` traced: a hot one (a training chunk) with XLA's defaults,
    one that runs once (an initialization, the final evaluation) with
    :func:`compile_run_once` (cheaper to compile, same bits)."""
    return compile_run_once(lowered) if run_once else lowered.compile()
