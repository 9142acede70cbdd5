"""Reliability: a killed run resumes to the same parameters; damaged checkpoints and datasets are
one-line errors (resume falls back past them); NaN/inf stops training at the update that made
it; nothing is ever unpickled; an unwritable or full output directory is refused before any
compile."""

import dataclasses
import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoint import CONFIG as CHECKPOINT_CONFIG
from test_checkpoint import QUIET, _assert_trees_equal

import seqrl.data
import seqrl.loop
import seqrl.runtime
from seqrl import config as cfg
from seqrl.api import load
from seqrl.checkpoint import Checkpointer
from seqrl.cli import main
from seqrl.data import DatasetMeta, load_dataset, save_dataset
from seqrl.envs.spaces import Box, Discrete
from seqrl.errors import NonFiniteError, UserError
from seqrl.loop import nonfinite, run
from seqrl.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
CARTPOLE = "configs/ppo/cartpole.yaml"
# test_checkpoint's run as 32 updates in 16 chunks, a checkpoint after each: a killed run has
# many to resume from (later overrides win)
CONFIG = [*CHECKPOINT_CONFIG, "ppo.num_steps=16", "loop.num_chunks=16"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqrl: error: "), err
    return err


pytestmark = pytest.mark.xdist_group("reliability")  # one worker trains the fixture's run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of CONFIG."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run(cfg.load_config(CARTPOLE, CONFIG), run_dir=run_dir, **QUIET)
    return load(run_dir).state


def _steps(run_dir: Path) -> list[int]:
    """Committed checkpoints (orbax renames a finished one into place)."""
    ckpts = run_dir / "checkpoints"
    if not ckpts.exists():
        return []
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())


# ---------------------------------------------------------------------------------------------
# Crash-safe resume
# ---------------------------------------------------------------------------------------------


def test_run_killed_mid_training_resumes_to_identical_parameters(tmp_path, reference, capsys):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "seqrl.cli", "train", CARTPOLE, *CONFIG, "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        [*cmd, "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(_steps(run_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (run_dir / "summary.json").exists()  # it really died mid-training
    assert 2 <= len(_steps(run_dir)) < 16

    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"resumed from update (\d+)", out), out
    _assert_trees_equal(load(run_dir).state, reference)
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, 33))
    assert not list((run_dir / "checkpoints").glob("*tmp*"))  # a save cut short is cleaned up


def test_only_the_writer_removes_leftovers_of_a_killed_save(tmp_path):
    _, state = _small_checkpoints(tmp_path)
    leftover = tmp_path / "3.orbax-checkpoint-tmp"  # what a save killed midway leaves
    (leftover / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    metadata = {"item_handlers": None, "init_timestamp_nsecs": 1, "commit_timestamp_nsecs": None}
    (leftover / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
    assert Checkpointer(tmp_path).steps() == [1, 2]
    assert leftover.exists()  # a reader (seqrl eval) may run beside a training that is saving
    Checkpointer(tmp_path, clean_up=True).save(3, state, {"updates_done": 3})  # a resumed run
    assert not leftover.exists() and Checkpointer(tmp_path).steps() == [1, 2, 3]


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, reference, capsys):
    config = cfg.load_config(CARTPOLE, CONFIG)
    run_dir = tmp_path / "run"
    run(config, run_dir=run_dir, stop_after_chunks=3, **QUIET)
    assert _steps(run_dir) == [2, 4, 6]
    damaged = run_dir / "checkpoints/6/state/_METADATA"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a torn write

    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    fallback = [line for line in out.splitlines() if "using checkpoint 4 instead" in line]
    assert len(fallback) == 1 and str(damaged) in fallback[0], out
    assert "resumed from update 4" in out
    _assert_trees_equal(load(run_dir).state, reference)
    assert (run_dir / "checkpoints-damaged/6/state/_METADATA").exists()  # kept, out of the way


def test_resume_before_the_first_checkpoint_starts_over(tmp_path):
    config = cfg.load_config(CARTPOLE, CONFIG)
    run_dir = tmp_path / "run"
    run(config, run_dir=run_dir, stop_after_chunks=1, **QUIET)
    first = load(run_dir).state
    Checkpointer(run_dir / "checkpoints").set_aside([2])  # as if killed before it was written
    lines = []
    run(config, run_dir=run_dir, resume=True, stop_after_chunks=1, progress=False, log=lines.append)
    assert any("starting from update 0" in line for line in lines), lines
    _assert_trees_equal(load(run_dir).state, first)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["update"] for r in rows] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Damaged files: one line naming the file
# ---------------------------------------------------------------------------------------------


def _small_checkpoints(directory: Path) -> tuple[Checkpointer, dict]:
    state = {"params": {"w": jnp.linspace(-1, 1, 4096)}, "step": jnp.int32(7)}
    ckpt = Checkpointer(directory)
    for step in (1, 2):
        ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), {"updates_done": step})
    return ckpt, state


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 64, len(data)), 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


# pytest collects what seqrl.checkpoint's unraisable hook drops (see the subprocess test below)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage",
    ["truncate-json", "empty-json", "flip-arrays", "truncate-arrays", "delete-arrays"],
)
def test_damaged_checkpoint_is_one_line_and_the_previous_one_loads(tmp_path, damage):
    ckpt, state = _small_checkpoints(tmp_path / "ckpt")
    newest = tmp_path / "ckpt/2"
    if damage.endswith("json"):
        target = newest / "state/_METADATA"
        target.write_bytes(target.read_bytes()[:40] if damage.startswith("truncate") else b"")
    else:
        target = _largest_file(newest / "state")
        if damage == "flip-arrays":
            _flip_bytes(target)
        elif damage == "truncate-arrays":
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
        else:
            target.unlink()
    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(UserError) as info:
        ckpt.restore(state, step=2)
    message = str(info.value)
    assert "\n" not in message and str(newest) in message, message
    lines = []
    restored, meta = ckpt.restore(state, log=lines.append)  # the newest that restores
    assert meta == {"updates_done": 1}
    _assert_trees_equal(restored, state)
    assert len(lines) == 1 and str(newest) in lines[0] and "using checkpoint 1" in lines[0]


def test_a_failed_restore_prints_nothing_else(tmp_path):
    """orbax leaves reads behind when a restore fails; they must not print tracebacks."""
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_reliability import _largest_file, _small_checkpoints
from seqrl.checkpoint import Checkpointer
from seqrl.errors import UserError
ckpt, state = _small_checkpoints(Path({str(tmp_path)!r}))
for step in (1, 2):
    _largest_file(Path({str(tmp_path)!r}) / str(step) / "state").unlink()
try:
    Checkpointer(Path({str(tmp_path)!r})).restore(state)
except UserError as e:
    print(e)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "could not be restored" in out.stdout and "no older checkpoint" in out.stdout
    noise = [line for line in out.stderr.splitlines() if "Warning" not in line]
    assert noise == [], out.stderr


def _toy_dataset(path: Path) -> Path:
    n, length = 4, 50
    rng = np.random.default_rng(0)
    from seqrl.data import Trajectories

    traj = Trajectories(
        obs=rng.normal(size=(n, length, 3)).astype(np.float32),
        actions=rng.integers(0, 2, (n, length)).astype(np.int32),
        rewards=np.ones((n, length), np.float32),
        terminated=np.zeros((n, length), bool),
        truncated=np.arange(length)[None].repeat(n, 0) == length - 1,
        lengths=np.full(n, length, np.int32),
        final_obs=rng.normal(size=(n, 3)).astype(np.float32),
    )
    meta = DatasetMeta("gymnax/CartPole-v1", Box.make(-5.0, 5.0, (3,)), Discrete(2))
    return save_dataset(path, traj, meta)


def _find_array(h5_bytes: bytes, array: np.ndarray) -> int:
    at = h5_bytes.find(array.tobytes())
    assert at > 0
    return at


@pytest.mark.parametrize("damage", ["truncate", "flip-observation", "garbage-header"])
def test_damaged_dataset_is_one_line_naming_the_file(tmp_path, damage):
    path = _toy_dataset(tmp_path / "toy-v0")
    load_dataset(path)
    h5 = path / "data/main_data.hdf5"
    data = bytearray(h5.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "flip-observation":  # valid HDF5, finite values: only the checksum knows
        import h5py

        with h5py.File(h5) as f:
            obs = np.asarray(f["episode_2/observations"])
        at = _find_array(bytes(data), obs) + 4 * 7
        data[at] ^= 0x01  # the lowest mantissa bit of one observation
    else:
        data[:64] = b"\x00" * 64
    h5.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message and str(h5) in message, message


def test_save_dataset_is_atomic(tmp_path, monkeypatch):
    """A dataset write killed before its last step leaves neither the dataset nor a temporary
    directory."""

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seqrl.data, "_read_episodes", die)
    with pytest.raises(KeyboardInterrupt):
        _toy_dataset(tmp_path / "toy-v0")
    assert list(tmp_path.iterdir()) == []


def test_summary_writes_are_atomic(tmp_path, monkeypatch):
    from seqrl.files import write_json_atomic

    target = tmp_path / "summary.json"
    write_json_atomic(target, {"a": 1})

    def die(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ---------------------------------------------------------------------------------------------
# Non-finite guard
# ---------------------------------------------------------------------------------------------


def test_nonfinite_names_the_first_bad_quantity():
    class State(NamedTuple):
        params: dict

    good = State({"w": jnp.ones(3), "steps": jnp.arange(3)})  # integer leaves are skipped
    bad = State({"w": jnp.array([1.0, jnp.inf, 0.0]), "steps": jnp.arange(3)})
    fine = {"loss": 1.0, "value_loss": 2.0, "grad_norm": 3.0, "episode_return": jnp.nan}
    assert int(nonfinite(good, fine)) == 0
    assert int(nonfinite(bad, fine)) == 3
    assert int(nonfinite(bad, {**fine, "grad_norm": jnp.nan})) == 2
    assert int(nonfinite(bad, {**fine, "value_loss": jnp.inf, "grad_norm": jnp.nan})) == 1


def test_agents_report_loss_and_gradient_norm():
    """The contract the guard relies on, checked by tracing (nothing is compiled)."""
    from test_dt import TINY, _trajectories

    from seqrl.agents import dt, ppo

    trainer = ppo.make_trainer(cfg.load_config(CARTPOLE, CONFIG))
    state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    _, metrics = jax.eval_shape(trainer.update, state)
    assert {"policy_loss", "value_loss", "grad_norm"} <= metrics.keys()

    trainer = dt.make_trainer(cfg.load_config(TINY), _trajectories())
    state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    _, metrics = jax.eval_shape(trainer.update, state, trainer.data)
    assert {"loss", "grad_norm"} <= metrics.keys()


class ToyState(NamedTuple):
    params: jax.Array
    step: jax.Array


def _toy_agent(quantity: str, bad_from: int):
    """Updates that turn ``quantity`` NaN from update ``bad_from`` on."""

    def update(s):
        step = s.step + 1
        poison = jnp.where(step >= bad_from, jnp.nan, 0.0)
        params = s.params + 0.1 + (poison if quantity == "parameters" else 0.0)
        metrics = {
            "loss": 1.0 + (poison if quantity == "loss" else 0.0),
            "grad_norm": 1.0 + (poison if quantity == "gradients" else 0.0),
            "episode_return": jnp.float32(1.0),
        }
        return ToyState(params, step), metrics

    trainer = Trainer(
        init=lambda key: ToyState(jnp.zeros(3), jnp.int32(0)),
        update=update,
        evaluate=lambda s, key, n, det: {"returns": jnp.zeros(n)},
        num_updates=8,
        steps_per_update=1,
    )
    return types.SimpleNamespace(make_trainer=lambda config: trainer)


@pytest.mark.parametrize("quantity", ["loss", "gradients", "parameters"])
def test_nonfinite_stops_at_the_update_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, quantity
):
    monkeypatch.setattr(seqrl.loop.cfg, "agent_module", lambda name: _toy_agent(quantity, 5))
    config = cfg.load_config(CARTPOLE, ["loop.num_chunks=4", "loop.tensorboard=false"])
    with pytest.raises(NonFiniteError) as info:
        run(config, run_dir=tmp_path / "run", **QUIET)
    checkpoints = tmp_path / "run/checkpoints"
    assert str(info.value) == (
        f"training stopped: non-finite {quantity} at update 5 (seed 0); kept the last good "
        f"checkpoint, update 4, in {checkpoints.absolute()}"
    )
    assert Checkpointer(checkpoints).steps() == [2, 4]  # the bad state (update 6) never saved
    rows = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["update"] for r in rows] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "run/summary.json").exists()


def test_a_broken_evaluation_stops_the_run_after_the_first_chunk(tmp_path, monkeypatch):
    """The evaluation is traced while the first chunk trains: a mistake in it ends the run
    there, before any checkpoint or metrics row is written."""

    def broken(s, key, n, det):
        raise ValueError("the evaluation cannot be traced")

    toy = _toy_agent("loss", bad_from=100)
    trainer = dataclasses.replace(toy.make_trainer(None), evaluate=broken)
    agent = types.SimpleNamespace(make_trainer=lambda config: trainer)
    monkeypatch.setattr(seqrl.loop.cfg, "agent_module", lambda name: agent)
    config = cfg.load_config(CARTPOLE, ["loop.num_chunks=4", "loop.tensorboard=false"])
    with pytest.raises(ValueError, match="the evaluation cannot be traced"):
        run(config, run_dir=tmp_path / "run", **QUIET)
    assert Checkpointer(tmp_path / "run/checkpoints").steps() == []
    assert not (tmp_path / "run/metrics.jsonl").exists()


def test_the_evaluation_is_traced_on_the_callers_thread(tmp_path, monkeypatch):
    """JAX's context managers (enable_x64, default_matmul_precision, ...) are thread-local: every
    program of a run is traced on the thread that called run, under the caller's contexts."""
    threads = []

    def evaluate(s, key, n, det):
        threads.append(threading.current_thread())
        return {"returns": jnp.zeros(n)}

    toy = _toy_agent("loss", bad_from=100)
    trainer = dataclasses.replace(toy.make_trainer(None), evaluate=evaluate)
    agent = types.SimpleNamespace(make_trainer=lambda config: trainer)
    monkeypatch.setattr(seqrl.loop.cfg, "agent_module", lambda name: agent)
    config = cfg.load_config(CARTPOLE, ["loop.num_chunks=4", "loop.tensorboard=false"])
    result = run(config, run_dir=tmp_path / "run", **QUIET)
    assert threads and set(threads) == {threading.current_thread()}
    assert result.summary["final_return_mean"] == 0.0


def test_diverging_ppo_exits_2_with_one_line(tmp_path, capsys):
    # the lr is traced: the programs compiled for CONFIG serve (from the compilation cache)
    argv = ["train", CARTPOLE, *CONFIG, "ppo.lr=1e30", "--run-dir", str(tmp_path / "run")]
    assert main([*argv, "--no-progress"]) == 2
    err = _one_error_line(capsys)
    assert "training stopped: non-finite loss at update 1 (seed 0)" in err
    assert "no checkpoint had been saved yet" in err
    assert not (tmp_path / "run/summary.json").exists()


# ---------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that something unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_no_load_path_unpickles():
    """Source check: no pickle, no np.load with pickles, no unsafe YAML anywhere we ship."""
    banned = re.compile(
        r"import pickle|from pickle|cloudpickle|import dill|allow_pickle\s*=\s*True"
        r"|yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|torch\.load|joblib\.load"
    )
    sources = [p for d in ("seqrl", "agents", "envs") for p in (ROOT / d).rglob("*.py")]
    assert sources
    hits = [f"{p}: {m.group()}" for p in sources for m in banned.finditer(p.read_text())]
    assert hits == []


def test_crafted_pickles_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Payload(marker))

    # in place of every file of a checkpoint
    ckpt, state = _small_checkpoints(tmp_path / "ckpt")
    for file in (tmp_path / "ckpt/2").rglob("*"):
        if file.is_file():
            file.write_bytes(blob)
    with pytest.raises(UserError, match="damaged or not an orbax file"):
        Checkpointer(tmp_path / "ckpt").restore(state, step=2)

    # a run whose only checkpoint is a pickle
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints/1").mkdir(parents=True)
    (run_dir / "config.yaml").write_text((ROOT / CARTPOLE).read_text())
    for name in ("_CHECKPOINT_METADATA", "state.pkl", "checkpoint"):
        (run_dir / "checkpoints/1" / name).write_bytes(blob)
    assert main(["eval", str(run_dir)]) == 2
    _one_error_line(capsys)

    # in place of a dataset's files, and as the dataset itself
    path = _toy_dataset(tmp_path / "toy-v0")
    (path / "data/main_data.hdf5").write_bytes(blob)
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        load_dataset(path)
    (path / "data/metadata.json").write_bytes(blob)
    with pytest.raises(UserError, match="not valid JSON"):
        load_dataset(path)
    (tmp_path / "data.pkl").write_bytes(blob)
    with pytest.raises(UserError, match="not a Minari dataset"):
        load_dataset(tmp_path / "data.pkl")

    # a config asking YAML to build Python objects
    config = tmp_path / "evil.yaml"
    config.write_text(f"agent: !!python/object/apply:pathlib.Path.touch ['{marker}']\n")
    assert main(["train", str(config)]) == 2
    assert "is not valid YAML" in _one_error_line(capsys)

    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Unwritable or full output directory: refused before any compile
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_compiles(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled although the output directory is unusable")

    monkeypatch.setattr(seqrl.runtime, "lower", refuse)


def _refused_before_compiling(readonly: Path, capsys) -> None:
    for run_dir in (readonly, readonly / "run"):
        assert main(["train", CARTPOLE, "--run-dir", str(run_dir), "--no-progress"]) == 2
        assert "cannot write to run directory" in _one_error_line(capsys)
    assert main(["plot", "runs", "-o", str(readonly / "plot.png")]) == 2
    assert f"cannot write {readonly / 'plot.png'}" in _one_error_line(capsys)
    assert main(["collect", "runs", "--episodes", "1", "-o", str(readonly / "sub/d-v0")]) == 2
    assert "cannot write the dataset into" in _one_error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_output_directory_is_refused_before_compiling(tmp_path, capsys, no_compiles):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        _refused_before_compiling(readonly, capsys)
    finally:
        readonly.chmod(0o700)


def test_read_only_output_directory_emulated(tmp_path, capsys, no_compiles, monkeypatch):
    """The same checks where the test runs as root: writes below the directory fail with
    EACCES, as the kernel refuses them to anyone else."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()

    def refuse_below(method):
        original = getattr(Path, method)

        def guarded(self, *args, **kwargs):
            if self.absolute().is_relative_to(readonly) and self.absolute() != readonly:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, guarded)

    for method in ("mkdir", "write_text", "open"):
        refuse_below(method)
    _refused_before_compiling(readonly, capsys)


def test_full_disk_is_refused_before_compiling(tmp_path, capsys, no_compiles, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    assert main(["train", CARTPOLE, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = _one_error_line(capsys)
    assert f"not enough free space in {tmp_path / 'run'}" in err, err
    assert "0.1 MB free" in err
