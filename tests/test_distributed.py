"""Scaling out on jax.sharding: a run on 4 (forced host) devices ends with the same learner
state as the same run on 1 device, for PPO with an MLP (seeds sharded) and with S5 (env batch
sharded) and for the DT (batch of windows sharded); two `seqrl train` processes over loopback
(jax.distributed) train one chunk, write one checkpoint, and match a one-process run; bad
`devices` values and multi-host flags are one-line errors (exit 2).

XLA reads ``--xla_force_host_platform_device_count`` when jax starts, so the multi-device runs
happen in fresh subprocesses."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_dt import TINY as DT_TINY

from seqrl import config as cfg
from seqrl.api import load
from seqrl.cli import main
from seqrl.data import DatasetMeta, Trajectories, save_dataset
from seqrl.envs.spaces import Box, Discrete
from seqrl.loop import run
from seqrl.runtime import with_xla_flag

pytestmark = pytest.mark.xdist_group("distributed")  # one worker runs the 4-device process

ROOT = Path(__file__).resolve().parent.parent
FOUR_DEVICES = {  # the suite's own XLA flags (tests/conftest.py) plus 4 forced devices
    **os.environ,
    "XLA_FLAGS": with_xla_flag(
        os.environ.get("XLA_FLAGS", ""), "xla_force_host_platform_device_count", "4"
    ),
}
ONE_DEVICE = {**os.environ}
PPO = "configs/ppo/cartpole.yaml"
TINY_PPO = [
    "total_timesteps=1024",
    "ppo.num_steps=32",
    "loop.num_chunks=1",
    "loop.eval_episodes=4",
    "loop.tensorboard=false",
]
S5 = [
    "network.backbone=s5",
    "network.d_model=16",
    "network.state_size=8",
    "network.hidden_sizes=[16]",
]

# trains each case with devices=1 and devices=4 in ONE process that has 4 devices (one start-up
# for all cases); saves each run's restored learner state and summary, and how many
# cross-device reductions its compiled training chunk makes (none unless a data batch is
# really split over the devices)
SCRIPT = """
import json, sys
import jax, numpy as np
import seqrl.loop, seqrl.runtime
from seqrl import config as cfg
from seqrl.api import load
cases, root = json.loads(sys.argv[1]), sys.argv[2]
assert jax.device_count() == 4, jax.devices()
compile_, chunks = seqrl.runtime.compile, []
def recording(lowered, run_once):
    compiled = compile_(lowered, run_once)
    if not run_once:
        chunks.append(compiled.as_text())
    return compiled
seqrl.runtime.compile = recording
for name, (source, overrides) in cases.items():
    out = f"{root}/{name}"
    for devices in (1, 4):
        config = cfg.load_config(source, [*overrides, f"devices={devices}"])
        result = seqrl.loop.run(
            config, run_dir=f"{out}/devices{devices}", progress=False, log=lambda _: None
        )
        state = jax.device_get(load(result.run_dir).state)
        np.savez(f"{out}/state{devices}.npz", *jax.tree.leaves(state))
        (chunk,) = chunks
        chunks.clear()
        with open(f"{out}/chunk{devices}.json", "w") as f:
            json.dump({"all_reduces": chunk.count(" all-reduce(")}, f)
# a command line whose `devices` fits none of the axes: its exit code and what it printed
import contextlib, io
from seqrl.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(json.loads(sys.argv[3]))
with open(f"{root}/bad_devices.json", "w") as f:
    json.dump({"code": code, "stderr": err.getvalue()}, f)
"""


def _states(out: Path, devices: int) -> list[np.ndarray]:
    with np.load(out / f"state{devices}.npz") as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _summary(out: Path, devices: int) -> dict:
    return json.loads((out / f"devices{devices}" / "summary.json").read_text())


def _losses(run_dir: Path) -> np.ndarray:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return np.array([[r[k] for k in sorted(r) if k.endswith("loss")] for r in rows])


def _dt_dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n, length = 6, 12
    traj = Trajectories(
        obs=rng.normal(size=(n, length, 4)).astype(np.float32),
        actions=rng.integers(0, 2, (n, length)).astype(np.int32),
        rewards=np.ones((n, length), np.float32),
        terminated=np.zeros((n, length), bool),
        truncated=np.arange(length)[None].repeat(n, 0) == length - 1,
        lengths=np.full(n, length, np.int32),
        final_obs=rng.normal(size=(n, 4)).astype(np.float32),
    )
    meta = DatasetMeta("gymnax/CartPole-v1", Box.make(-5.0, 5.0, (4,)), Discrete(2))
    return save_dataset(path, traj, meta)


CASES = {
    # 4 seeds on 4 devices: one seed per device (every array of the learner state cut along
    # its seed axis, nothing communicated); 7 updates in chunks of 3, 3 and 1 (one program,
    # its number of updates a replicated argument)
    "ppo-mlp": (
        PPO,
        [*TINY_PPO, "num_seeds=4", "num_envs=4", "total_timesteps=896", "loop.num_chunks=3"],
        "seeds",
    ),
    # 1 seed: its 8 envs split over 4 devices (env states, observations and carries cut along
    # the env axis), parameters replicated, gradients reduced across the devices
    "ppo-s5": (PPO, [*TINY_PPO, *S5, "num_seeds=1", "num_envs=8"], "num_envs"),
    # 1 seed: its batch of 8 windows split over 4 devices inside the update (the learner state
    # is replicated), gradients reduced across the devices
    "dt": (
        None,
        ["total_updates=8", "dt.num_layers=1", "loop.num_chunks=1", "loop.tensorboard=false"],
        "dt.batch_size",
    ),
}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> Path:
    """Every case trained on 1 and on 4 devices, in one subprocess with 4 forced devices."""
    root = tmp_path_factory.mktemp("devices")
    dt_source = {**DT_TINY, "dataset": str(_dt_dataset(root / "data" / "tiny-v0"))}
    cases = {
        name: (dt_source if source is None else source, overrides)
        for name, (source, overrides, _) in CASES.items()
    }
    bad = ["train", PPO, *TINY_PPO, "devices=3", "--run-dir", str(root / "bad")]
    cmd = [sys.executable, "-c", SCRIPT, json.dumps(cases), str(root), json.dumps(bad)]
    done = subprocess.run(cmd, cwd=ROOT, env=FOUR_DEVICES, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _all_reduces(out: Path, devices: int) -> int:
    return json.loads((out / f"chunk{devices}.json").read_text())["all_reduces"]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_four_devices_train_what_one_device_trains(case, four_devices):
    sharded = CASES[case][2]
    tmp_path = four_devices / case
    one, four = _summary(tmp_path, 1), _summary(tmp_path, 4)
    leaves = one["sharding"]["leaves"]
    assert one["sharding"]["devices"] == 1 and len(one["devices"]) == 1
    assert one["sharding"]["split_leaves"] == {} and _all_reduces(tmp_path, 1) == 0
    # where the arrays of the trained learner state really are
    placed = four["sharding"]
    assert placed["devices"] == 4 and placed["sharded"] == sharded and placed["processes"] == 1
    assert len(four["devices"]) == 4 and placed["leaves"] == leaves
    if sharded == "seeds":
        assert placed["split_leaves"] == {"0": leaves} and _all_reduces(tmp_path, 4) == 0
    elif sharded == "num_envs":
        assert set(placed["split_leaves"]) == {"1"} and 0 < placed["split_leaves"]["1"] < leaves
        assert _all_reduces(tmp_path, 4) > 0
    else:
        assert placed["split_leaves"] == {} and _all_reduces(tmp_path, 4) > 0
    a, b = _states(tmp_path, 1), _states(tmp_path, 4)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _losses(tmp_path / "devices1"), _losses(tmp_path / "devices4"), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        one["final_return_per_seed"], four["final_return_per_seed"], rtol=1e-5
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_train_one_chunk_and_checkpoint(tmp_path):
    """Two processes (one CPU device each) share the 2 seeds; process 0 alone writes the run."""
    overrides = [*TINY_PPO, "num_seeds=2", "num_envs=4"]
    run_dir = tmp_path / "two-processes"
    port = _free_port()
    cmd = [sys.executable, "-m", "seqrl.cli", "train", PPO, *overrides, "--run-dir", str(run_dir)]
    cmd += ["--no-progress", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    env = ONE_DEVICE
    procs = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "final return" in outputs[0][0] and "final return" not in outputs[1][0]
    summary = json.loads((run_dir / "summary.json").read_text())
    sharding = {k: summary["sharding"][k] for k in ("devices", "sharded", "processes")}
    assert sharding == {"devices": 2, "sharded": "seeds", "processes": 2}
    leaves = summary["sharding"]["leaves"]
    assert summary["sharding"]["split_leaves"] == {"0": leaves}  # one seed per process
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["8"]
    # the same run in this one process
    reference = run(
        cfg.load_config(PPO, overrides),
        run_dir=tmp_path / "one-process",
        progress=False,
        log=lambda _: None,
    )
    a, b = load(run_dir).state, load(reference.run_dir).state
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    assert summary["final_return_per_seed"] == pytest.approx(
        reference.summary["final_return_per_seed"], rel=1e-5
    )


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqrl: error: "), err
    return err


def test_devices_that_divide_nothing_are_one_line_error(four_devices):
    """`seqrl train ... devices=3` with 4 devices (run by the 4-device process above)."""
    done = json.loads((four_devices / "bad_devices.json").read_text())
    assert done["code"] == 2, done
    assert done["stderr"] == (
        "seqrl: error: config key 'devices' (3) must divide num_seeds (1) or num_envs (4)\n"
    )
    assert not (four_devices / "bad" / "checkpoints").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["devices=2"], "config key 'devices' asks for 2 devices; 1 available (cpu)"),
        (["devices=0"], "config key 'devices' must be >= 1, got 0"),
        (["devices=some"], "config key 'devices': expected one of 'all' or an integer"),
        (["--coordinator", "localhost"], "--coordinator must be HOST:PORT, got 'localhost'"),
        (["--coordinator", "127.0.0.1:1"], "--coordinator needs --num-processes N"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be in 0..1 with --num-processes 2, got 2",
        ),
        (["--num-processes", "2"], "--num-processes/--process-id need --coordinator"),
        (["--process-id", "-1"], "expected an integer >= 0, got '-1'"),
    ],
)
def test_bad_devices_and_multihost_flags_are_one_line_errors(args, message, tmp_path, capsys):
    code = main(["train", PPO, *TINY_PPO, "--run-dir", str(tmp_path / "run"), *args])
    assert code == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "run" / "checkpoints").exists()
