"""Every notebook in notebooks/ runs top to bottom at its default budget, in a kernel of this
interpreter, writes only into the output folder it is given, saves its figures there, and ends
with its own headline checks (a "Checks" cell of assertions: the notebook fails if one fails).

The kernel compiles at XLA's optimization level 1, not the suite's 0: the notebooks train long
enough that level 0's slower code costs more than it saves (notebook 02: 41 s at level 0, 31 s
at level 1; level 3, XLA's default, compiles longer for the same speed)."""

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from seqrl.runtime import with_xla_flag

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 600  # seconds; a notebook's default budget is meant to finish in <= 3 minutes
# Run first, in the kernel: which Python executes the notebook.
PROBE = "import sys\nprint(sys.prefix)"
# The longest first (tests/conftest.py hands the notebooks to the workers before anything
# else); 01 before 03, which trains the same PPO program and so loads it from the compile cache
# (01 starts on the other worker while 04 runs, 03 only after one of the two has finished).
FIRST = ["04_meta_dt", "01_quickstart", "03_decision_transformer_fourier"]
ORDER = sorted(
    NOTEBOOKS.glob("*.ipynb"), key=lambda p: (FIRST.index(p.stem) if p.stem in FIRST else 9, p.stem)
)


def _tree(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if "outputs" not in p.relative_to(path).parts}


@pytest.mark.slow
@pytest.mark.parametrize("path", ORDER, ids=lambda p: p.stem)
def test_notebook_runs_and_saves_its_figures(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    monkeypatch.setenv("SEQRL_NOTEBOOK_OUTPUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    level = "xla_backend_optimization_level"
    monkeypatch.setenv("XLA_FLAGS", with_xla_flag(os.environ.get("XLA_FLAGS", ""), level, "1"))
    before = _tree(NOTEBOOKS)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",  # ipykernel's, from this environment (checked below)
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the kernel starts in notebooks/
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.0f} s")

    probe = notebook.cells[0].outputs[0]["text"].strip()
    assert os.path.samefile(probe, sys.prefix), f"the kernel ran in {probe}, not {sys.prefix}"
    checks = notebook.cells[-1]  # the headline assertions ran and passed
    assert "assert " in checks.source and "checks passed" in checks.outputs[-1]["text"]
    figures = sorted((tmp_path / path.stem / "figures").glob("*.png"))
    assert figures, f"{path.name} saved no figure under {tmp_path / path.stem / 'figures'}"
    assert all(f.stat().st_size > 1000 for f in figures)
    assert _tree(NOTEBOOKS) == before, "the notebook wrote into notebooks/"
