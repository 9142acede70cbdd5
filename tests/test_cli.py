"""The `seqrl` command: user errors are one line with exit code 2; a tiny run end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_collect import TINY  # test_collect's tiny CartPole run: its programs serve both

import seqrl
from seqrl.cli import main

CARTPOLE = "configs/ppo/cartpole.yaml"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "a CONFIG file is required"),
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", CARTPOLE, "ppo.lrr=1"], "unknown config key 'ppo.lrr'"),
        (["train", CARTPOLE, "num_envs=-1"], "'num_envs' must be >= 1"),
        (["train", CARTPOLE, "oops"], "expected key=value overrides, got 'oops'"),
        (["train", CARTPOLE, "--bogus"], "unrecognized arguments: --bogus"),
        (["eval", "no/such/run"], "no/such/run is not a run directory"),
        (["eval", ".", "--episodes", "0"], "expected a positive integer"),
        (["plot", "no/such/run"], "is not a run directory (no metrics.jsonl)"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    before = _unfinished_runs()  # runs/ may hold the user's own runs in progress
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqrl: error: "), err
    assert message in err
    assert _unfinished_runs() <= before


def _unfinished_runs() -> set[Path]:
    runs = Path("runs")
    started = runs.glob("*/checkpoints") if runs.exists() else []
    return {p.parent for p in started if not (p.parent / "summary.json").exists()}


def test_resume_with_a_different_config_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(Path(CARTPOLE).read_text())
    assert main(["train", "--resume", str(run_dir), "ppo.lr=1"]) == 2
    assert "differs at ppo.lr" in capsys.readouterr().err


def test_unwritable_run_dir_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", CARTPOLE, *TINY, "--run-dir", str(blocker / "run")]) == 2
    assert "cannot write to run directory" in capsys.readouterr().err


def test_help_everywhere():
    for argv in (
        ["--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["plot", "--help"],
        ["envs", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0


@pytest.mark.slow
def test_console_script_train_eval_plot_envs(tmp_path, capsys):
    """The installed `seqrl` entry point, as a user runs it."""
    cli = [sys.executable, "-m", "seqrl.cli"]
    root = Path(__file__).parent.parent
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [*cli, "train", CARTPOLE, *TINY, "--run-dir", str(run_dir), "--no-progress"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert f"results: {run_dir / 'summary.json'}" in out.stdout
    assert f"plot:    {run_dir / 'curve.png'}" in out.stdout

    out = subprocess.run(
        [*cli, "eval", str(run_dir), "--episodes", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes_per_seed"] == 3 and result["update"] == 16  # 2048 / (4 x 32)
    assert json.loads((run_dir / "eval.json").read_text()) == result
    # the number is the trained policy's: the checkpoint `seqrl eval` read is the state the run
    # ended with (it re-evaluates to the run's own final evaluation, episode for episode), and
    # `seqrl eval` scores it as the Python API does
    policy = seqrl.load(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert float(policy.final_evaluation()["returns"].mean()) == summary["final_return_mean"]
    assert result["return_mean"] == float(np.mean(policy.evaluate(3, seed=0)))

    # the other commands in this process (their parsing and exits are the same code; the
    # console script's start-up is what the two subprocesses above cover)
    plot = tmp_path / "both.png"
    assert main(["plot", str(run_dir), str(run_dir), "-o", str(plot), "--labels", "a", "b"]) == 0
    assert plot.stat().st_size > 1000
    capsys.readouterr()
    assert main(["envs"]) == 0
    listed = capsys.readouterr().out.split()
    assert "gymnax/CartPole-v1" in listed and "brax/ant" in listed

    # Resuming a finished run is a no-op that re-evaluates; a second `train` into it is refused.
    assert main(["train", CARTPOLE, *TINY, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "Traceback" not in err


def test_overrides_may_follow_the_options(tmp_path, capsys):
    """`seqrl train CONFIG --run-dir DIR key=value` applies the override (here: rejected as an
    unknown key before anything compiles), and other stray tokens are still errors."""
    from seqrl.cli import main

    args = ["train", "configs/ppo/cartpole.yaml", "--run-dir", str(tmp_path / "r"), "bogus=1"]
    assert main(args) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    assert main(["train", "configs/ppo/cartpole.yaml", "--run-dir", str(tmp_path), "--frob"]) == 2
    assert "unrecognized arguments: --frob" in capsys.readouterr().err
    assert main(["envs", "x=1"]) == 2
