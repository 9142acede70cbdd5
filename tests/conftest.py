"""Test-wide setup: the persistent compilation cache (compiles dominate the suite's time)."""

import os
from pathlib import Path

import pytest

from seqrl.runtime import configure_jax

configure_jax()


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"


# Tests name configs relative to the repository root, wherever pytest is started from.
os.chdir(Path(__file__).resolve().parent.parent)
