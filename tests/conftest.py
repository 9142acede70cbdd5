"""Test-wide setup. The suite's cost is compiles, so:

- XLA's backend optimization level 0 for this process and every process it starts (the CLI,
  notebook kernels, multi-device runs): XLA:CPU compiles 20-40% faster and no test's run time
  is the point (the learning tests are sized so their runs stay short). XLA_FLAGS are part of
  JAX's compilation cache key, so these programs never serve a user's runs. Set
  ``SEQRL_TEST_XLA_OPT_LEVEL`` to another level to change it (docs/testing.md).
- the persistent compilation cache, shared by the workers and the processes they start;
- the longest tests are handed to the workers first, so none of them starts last.
"""

import os
from pathlib import Path

import pytest

from seqrl.runtime import configure_jax, with_xla_flag

os.environ["XLA_FLAGS"] = with_xla_flag(
    os.environ.get("XLA_FLAGS", ""),
    "xla_backend_optimization_level",
    os.environ.get("SEQRL_TEST_XLA_OPT_LEVEL", "0"),
)
configure_jax()


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"


# Tests name configs relative to the repository root, wherever pytest is started from.
os.chdir(Path(__file__).resolve().parent.parent)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` first (a stable sort keeps the file order otherwise)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
