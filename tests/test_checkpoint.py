"""Checkpoints hold the full learner state; a resumed run ends where an uninterrupted one does."""

import json

import jax
import numpy as np

from seqrl import config as cfg
from seqrl.agents import ppo
from seqrl.api import load
from seqrl.checkpoint import Checkpointer
from seqrl.loop import run, seed_keys

CONFIG = [
    "total_timesteps=2048",
    "ppo.num_steps=32",
    "loop.num_chunks=4",
    "loop.eval_episodes=2",
    "num_seeds=2",
    "wrappers.normalize_obs=true",
]
QUIET = {"progress": False, "log": lambda _: None}


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_identical(tmp_path):
    config = cfg.load_config("configs/ppo/cartpole.yaml", CONFIG)
    trainer = ppo.make_trainer(config)
    state = jax.jit(jax.vmap(trainer.init))(seed_keys(0, 2))
    state, _ = jax.jit(jax.vmap(trainer.update))(state)  # non-trivial optimizer state
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(1, state, {"chunks_done": 1})
    restored, meta = Checkpointer(tmp_path / "ckpt").restore(state)
    _assert_trees_equal(state, restored)
    assert meta == {"chunks_done": 1}


def test_resume_equals_uninterrupted_run(tmp_path):
    config = cfg.load_config("configs/ppo/cartpole.yaml", CONFIG)
    full = run(config, run_dir=tmp_path / "full", **QUIET)
    partial = run(config, run_dir=tmp_path / "part", stop_after_chunks=2, **QUIET)
    assert partial.summary == {}
    assert Checkpointer(tmp_path / "part/checkpoints").steps() == [4, 8]
    resumed = run(config, run_dir=tmp_path / "part", resume=True, **QUIET)
    _assert_trees_equal(load(tmp_path / "full").state, load(tmp_path / "part").state)
    assert resumed.summary["final_return_mean"] == full.summary["final_return_mean"]
    assert resumed.summary["resumed"] is True
    rows = (tmp_path / "part/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["update"] for r in rows] == list(range(1, 17))


def test_resume_after_a_crash_drops_metrics_past_the_checkpoint(tmp_path):
    config = cfg.load_config("configs/ppo/cartpole.yaml", CONFIG)
    run(config, run_dir=tmp_path / "run", stop_after_chunks=1, **QUIET)
    with (tmp_path / "run/metrics.jsonl").open("a") as f:  # rows a killed run wrote too late
        f.write('{"update": 5, "env_steps": 640}\n{"update": 6, "env_s')
    run(config, run_dir=tmp_path / "run", resume=True, **QUIET)
    rows = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["update"] for r in rows] == list(range(1, 17))
