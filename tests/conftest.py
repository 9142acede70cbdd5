"""Test-wide setup. The suite's cost is compiles, so:

- XLA flags for this process and every process it starts (the CLI, notebook kernels,
  multi-device runs) that make XLA:CPU compile about half as long: backend optimization level
  0 and the classic (not the MLIR fusion) emitters. No test's run time is the point; the few
  whose training runs long compile those programs at level 1 (``optimized_training``,
  ``tests/test_learning.py``). XLA_FLAGS are part of JAX's compilation cache key, so these
  programs never serve a user's runs. ``SEQRL_TEST_XLA_OPT_LEVEL`` sets another level
  (docs/testing.md has the measurements).
- the persistent compilation cache, shared by the workers and the processes they start, keeping
  every program (not only those that compile for over 0.5 s, the runs' default);
- the longest tests are handed to the workers first, so none of them starts last.
"""

import os

# Every compiled program is cached, however quick its compile (the runs' default keeps only
# those over 0.5 s): most of the suite's ~2,000 programs compile in less, so without this a
# warm cache held ~220 of them and a warm suite recompiled the rest (measured: 548 -> 446
# CPU-s, docs/testing.md). Set before JAX is imported, so it holds in every process started
# from here too (CLI, notebook kernels, multi-device runs).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from seqrl.runtime import configure_jax, with_xla_flag  # noqa: E402

_flags = with_xla_flag(os.environ.get("XLA_FLAGS", ""), "xla_cpu_use_fusion_emitters", "false")
os.environ["XLA_FLAGS"] = with_xla_flag(
    _flags, "xla_backend_optimization_level", os.environ.get("SEQRL_TEST_XLA_OPT_LEVEL", "0")
)
configure_jax()


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"


@pytest.fixture
def default_emitters(monkeypatch) -> dict:
    """XLA's own (MLIR fusion) emitters for every program ``seqrl.loop.run`` compiles, and the
    compile options that ask for them: for the claims of bit-identical results between two
    differently built programs, which hold with XLA's defaults (what users run) but not with
    the suite's classic emitters, whose rounding follows each program's own fusions."""
    from seqrl import runtime

    options = {"xla_cpu_use_fusion_emitters": True}  # the level stays the suite's
    monkeypatch.setattr(
        runtime, "compile", lambda lowered, run_once: lowered.compile(compiler_options=options)
    )
    return options


@pytest.fixture
def optimized_training(monkeypatch):
    """``seqrl.loop.run``'s training chunks compiled at XLA's level 1, not the suite's 0: for
    tests that train long enough that faster code pays for its compile (PPO to 475 on CartPole:
    the chunk runs 976 updates)."""
    from seqrl import runtime

    compile_ = runtime.compile

    def compile_chunks(lowered, run_once):
        if run_once:
            return compile_(lowered, run_once)
        return lowered.compile(compiler_options=runtime.RUN_ONCE_OPTIONS)

    monkeypatch.setattr(runtime, "compile", compile_chunks)


# Tests name configs relative to the repository root, wherever pytest is started from.
os.chdir(Path(__file__).resolve().parent.parent)


def pytest_collection_modifyitems(config, items):
    """The notebooks first (the longest tests, in the order tests/test_notebooks.py gives), then
    the other tests marked ``slow``; a stable sort keeps the file order otherwise."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            Path(item.path).name != "test_notebooks.py",
        )
    )
