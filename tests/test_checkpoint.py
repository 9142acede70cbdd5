"""Checkpoints hold the full learner state; a resumed run ends where an uninterrupted one does."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import seqrl.runtime
from seqrl import config as cfg
from seqrl.agents import ppo
from seqrl.api import load
from seqrl.checkpoint import Checkpointer
from seqrl.loop import make_chunk, plan_chunks, run, seed_keys

CONFIG = [
    "total_timesteps=2048",
    "ppo.num_steps=32",
    "loop.num_chunks=4",
    "loop.eval_episodes=2",
    "num_seeds=2",
    "wrappers.normalize_obs=true",
]
QUIET = {"progress": False, "log": lambda _: None}
pytestmark = pytest.mark.xdist_group("checkpoint")  # its runs share programs: one worker


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


def test_plan_chunks_equal_where_a_divisor_allows_else_a_shorter_last_chunk():
    assert plan_chunks(976, 10) == [122] * 8  # the CartPole benchmark's plan
    assert plan_chunks(13, 4) == [4, 4, 4, 1]  # 13 is prime: no divisor gives 2-8 chunks
    assert plan_chunks(244, 20) == [13] * 18 + [10]


def test_variable_chunk_equals_the_scan_chunk(default_emitters):
    """One program runs any number of updates up to its size, with the same bits as a chunk
    compiled for that number; metrics rows past it are zeros."""
    config = cfg.load_config("configs/ppo/cartpole.yaml", [*CONFIG, "num_seeds=1"])
    trainer = ppo.make_trainer(config)
    states = jax.jit(jax.vmap(trainer.init))(seed_keys(0, 1))

    def compiled(fn, *args):
        return jax.jit(fn).lower(states, None, *args).compile(compiler_options=default_emitters)

    variable = compiled(make_chunk(trainer, 3, variable=True), np.int32(3))
    for n in (3, 2):
        expected = compiled(make_chunk(trainer, n))(states, None)
        got_states, got_metrics = variable(states, None, np.int32(n))
        _assert_trees_equal(expected[0], got_states)
        head = {k: m[:, :n] for k, m in got_metrics.items()}
        _assert_trees_equal(expected[1], head)
        for m in jax.tree.leaves(got_metrics):
            assert not np.asarray(m)[:, n:].any()


def test_a_shorter_last_chunk_runs_in_the_same_program(tmp_path, monkeypatch, default_emitters):
    """13 updates in chunks of 4, 4, 4 and 1: one chunk program (plus init and evaluation),
    and the same parameters as 13 updates in one chunk."""
    compiled = []
    compile_ = seqrl.runtime.compile

    def counting(lowered, run_once):
        compiled.append(run_once)
        return compile_(lowered, run_once)

    monkeypatch.setattr(seqrl.runtime, "compile", counting)
    overrides = [*CONFIG, "total_timesteps=13312", "num_envs=32", "ppo.num_steps=32"]
    chunked = cfg.load_config("configs/ppo/cartpole.yaml", [*overrides, "loop.num_chunks=4"])
    result = run(chunked, run_dir=tmp_path / "chunked", **QUIET)
    assert compiled.count(False) == 1 and compiled.count(True) == 2  # chunk; init, evaluation
    assert Checkpointer(tmp_path / "chunked/checkpoints").steps()[-1] == 13
    rows = (tmp_path / "chunked/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["update"] for r in rows] == list(range(1, 14))
    whole = cfg.load_config("configs/ppo/cartpole.yaml", [*overrides, "loop.num_chunks=1"])
    one = run(whole, run_dir=tmp_path / "whole", **QUIET)
    _assert_trees_equal(load(tmp_path / "whole").state, load(tmp_path / "chunked").state)
    assert one.summary["final_return_mean"] == result.summary["final_return_mean"]


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_a_run_written_before_the_agent_contract_loads_and_reproduces_itself(tmp_path):
    """A tiny Prompt-DT run trained at commit adcf6dd (before the typed agent contract): its
    config says ``agent: prompt_dt`` (now a meta_dt preset) and ``meta.target_return`` (now
    ``dt.target_return``), its checkpoint holds the Meta-DT learner state of then. It loads,
    and its final evaluation gives the return its summary recorded, to the bit."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "prompt_dt_adcf6dd", run_dir)
    saved = run_dir / "config.yaml"  # its datasets are fixtures too
    saved.write_text(saved.read_text().replace("@FIXTURES@", str(FIXTURES)))
    policy = load(run_dir)
    conf = policy.config
    assert (conf.agent, conf.meta.context, conf.meta.prompt) == ("meta_dt", False, "expert")
    assert conf.dt.target_return is None  # the best return of the data, as then
    summary = json.loads((run_dir / "summary.json").read_text())
    returns = policy.final_evaluation()["returns"]
    assert float(np.nanmean(returns)) == summary["final_return_mean"]
