"""Test-wide setup: the persistent compilation cache (compiles dominate the suite's time)."""

import pytest

from seqrl.runtime import configure_jax

configure_jax()


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"
