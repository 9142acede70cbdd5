"""seqrl's Decision Transformer (``seqrl.agents.dt``) trained on the benchmark's dataset, the way
``seqrl.loop`` trains: jitted chunks of updates (``seqrl.loop.make_chunk``), one ``lax.scan`` of
updates per chunk, with the window sampling on device inside the scan.

Run by :mod:`benchmarks.dt_throughput` in seqrl's ``.venv``. Compiles are cold: the persistent
compilation cache is never turned on here (``seqrl.runtime.configure_jax`` is not called). The
compile time is that of the two programs ``loop.run`` compiles before training (``init`` and one
chunk), ahead of time; samples/s = windows of K steps trained / seconds inside the chunks.

The DT trainer needs an environment only for its spaces (and for evaluation, never run here):
:class:`DatasetShapedEnv` has the dataset's observation and action spaces and nothing else.
"""

from __future__ import annotations

import argparse
import time
import types
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import peak_rss_mb, write_result
from seqrl import config as cfg
from seqrl.agents import dt
from seqrl.envs.core import Environment
from seqrl.envs.spaces import Box, Discrete
from seqrl.loop import init_seeds, make_chunk
from seqrl.runtime import versions


class DatasetShapedEnv(Environment):
    """Spaces only (``obs_dim`` floats; ``action_dim`` floats in [-1, 1], or ``num_actions``
    discrete actions when it is > 0): enough to build a DT trainer, not to evaluate one."""

    def __init__(self, obs_dim: int = 17, action_dim: int = 6, num_actions: int = 0):
        self.obs_dim, self.action_dim, self.num_actions = obs_dim, action_dim, num_actions

    @property
    def default_params(self) -> None:
        return None

    def observation_space(self, params: Any) -> Box:
        return Box.make(-np.inf, np.inf, (self.obs_dim,))

    def action_space(self, params: Any) -> Box | Discrete:
        if self.num_actions > 0:
            return Discrete(self.num_actions)
        return Box.make(-1.0, 1.0, (self.action_dim,))

    def reset(self, key, params):
        raise RuntimeError("DatasetShapedEnv only describes spaces; the benchmark never steps it")

    def step(self, key, state, action, params):
        raise RuntimeError("DatasetShapedEnv only describes spaces; the benchmark never steps it")


def dt_config(data_path: Path, head: str, obs_dim: int, action_dim: int, num_actions: int):
    """The DT gym configuration (Chen et al.): K 20, batch 64, 128 dims, 3 layers, 1 head."""
    return {
        "agent": "dt",
        "env": "benchmarks.peer_seqrl_dt:DatasetShapedEnv",
        "env_kwargs": {
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "num_actions": num_actions if head == "categorical" else 0,
        },
        "dataset": str(data_path),
        "num_seeds": 1,
        "dt": {
            "context": 20,
            "embed_dim": 128,
            "num_layers": 3,
            "num_heads": 1,
            "dropout": 0.1,
            "batch_size": 64,
            "lr": 1e-4,
            "warmup_steps": 10_000,
            "weight_decay": 1e-4,
            "grad_clip": 0.25,
            "return_scale": 1000.0,
            "max_timestep": 1000,
            "head": head,
        },
    }


def export_reference(path: Path, config: Any, trainer: Any, params: Any) -> None:
    """Parameters (``param:<flax path>``), one training batch, and the model's deterministic
    output on it (continuous: the action; discrete: the logits)."""
    env = DatasetShapedEnv(**config.env_kwargs)
    model = dt.make_model(config, env.action_space(None))
    batch = dt.sample_batch(
        jax.random.key(1), trainer.data, config.dt.batch_size, config.dt.context
    )
    dist = jax.jit(model.apply)(
        params, batch.rtg, batch.obs, batch.actions, batch.timesteps, batch.mask
    )
    output = dist.logits if env.num_actions else dist.mean
    arrays = {
        "param:" + "/".join(str(k.key) for k in key_path): np.asarray(leaf)
        for key_path, leaf in jax.tree_util.tree_leaves_with_path(params["params"])
    }
    fields = ("rtg", "obs", "actions", "timesteps", "mask")
    arrays.update({f"batch:{name}": np.asarray(getattr(batch, name)) for name in fields})
    np.savez(path, output=np.asarray(output), **arrays)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the benchmark's .npz dataset")
    p.add_argument("--head", choices=("deterministic", "categorical"), default="deterministic")
    p.add_argument("--chunk-updates", type=int, required=True, help="updates per jitted chunk")
    p.add_argument("--chunks", type=int, required=True, help="timed chunks")
    p.add_argument("--out", type=Path, required=True, help="file for the JSON result line")
    p.add_argument(
        "--export",
        type=Path,
        help="also write the initial parameters, a batch and the model's "
        "outputs on it to this .npz (the PyTorch worker checks it computes the same function)",
    )
    return p.parse_args()


def load(data: Path, head: str) -> tuple[Any, Any]:
    """``(config, trajectories)``: the DT configuration for the dataset's shapes, and the
    dataset (the discrete actions when ``head`` is categorical)."""
    raw = np.load(data)
    discrete = head == "categorical"
    trajectories = types.SimpleNamespace(
        obs=raw["obs"],
        actions=raw["actions_discrete"] if discrete else raw["actions"],
        rewards=raw["rewards"],
        lengths=raw["lengths"],
    )
    config = cfg.load_config(
        dt_config(
            data,
            head,
            raw["obs"].shape[2],
            raw["actions"].shape[2],
            int(raw["num_actions"]),
        )
    )
    return config, trajectories


def compile_programs(config: Any, trainer: Any, chunk_updates: int) -> tuple[Any, Any, dict]:
    """COMPILE the programs seqrl's loop compiles before training (init, one chunk), ahead of
    time: ``(initial states, compiled chunk, compile seconds: all, init, chunk)``."""
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    t0 = time.perf_counter()
    init = jax.jit(init_seeds(trainer)).lower(keys).compile()
    t1 = time.perf_counter()
    states = init(keys)
    chunk = (
        jax.jit(make_chunk(trainer, chunk_updates), donate_argnums=0)
        .lower(states, trainer.data)
        .compile()
    )
    t2 = time.perf_counter()
    return states, chunk, {"all": t2 - t0, "init": t1 - t0, "chunk": t2 - t1}


def describe(chunk: Any, params: Any) -> dict:
    """The compiled chunk's FLOPs per update (XLA counts the scan's body, one update, once) and
    the parameter count, in all and per top-level module."""
    cost = chunk.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "flops_per_update": float(cost["flops"]),
        "param_count": int(sum(x.size for x in jax.tree.leaves(params))),
        "param_breakdown": {
            name: int(sum(x.size for x in jax.tree.leaves(sub)))
            for name, sub in params["params"].items()
        },
    }


def train(chunk: Any, states: Any, data: Any, chunks: int) -> tuple[list[float], Any]:
    """TRAIN: timed chunks (the first call of a compiled program compiles nothing more);
    the seconds of each and the losses of every update."""
    chunk_seconds, losses = [], []
    for _ in range(chunks):
        start = time.perf_counter()
        states, metrics = chunk(states, data)
        loss = jax.block_until_ready(metrics["loss"])
        chunk_seconds.append(time.perf_counter() - start)
        losses.append(np.asarray(loss)[0])
    return chunk_seconds, np.concatenate(losses)


def main() -> None:
    args = parse_args()
    config, trajectories = load(args.data, args.head)
    t_setup = time.perf_counter()
    trainer = dt.make_trainer(config, trajectories)
    setup_seconds = time.perf_counter() - t_setup

    states, chunk, compile_seconds = compile_programs(config, trainer, args.chunk_updates)
    params = jax.tree.map(lambda x: x[0], states.params)
    model = describe(chunk, params)
    initial_params = jax.device_get(params)  # host copy: the chunks donate the state
    chunk_seconds, losses = train(chunk, states, trainer.data, args.chunks)
    train_seconds = sum(chunk_seconds)
    updates = args.chunks * args.chunk_updates
    samples = updates * config.dt.batch_size
    if args.export:
        export_reference(args.export, config, trainer, initial_params)

    write_result(
        args.out,
        {
            "peer": "seqrl",
            "head": args.head,
            "updates": updates,
            "chunk_updates": args.chunk_updates,
            "chunks": args.chunks,
            "samples": samples,
            "compile_seconds": round(compile_seconds["all"], 2),
            "compile_init_seconds": round(compile_seconds["init"], 2),
            "compile_chunk_seconds": round(compile_seconds["chunk"], 2),
            "train_seconds": round(train_seconds, 3),
            "chunk_seconds": [round(s, 3) for s in chunk_seconds],
            "samples_per_second": round(samples / train_seconds, 1),
            "loss_first_timed": float(losses[0]),
            "loss_last_timed": float(losses[-1]),
            **model,
            "setup_seconds": round(setup_seconds, 2),
            "peak_rss_mb": peak_rss_mb(),
            "devices": [str(d) for d in jax.devices()],
            "versions": versions(),
        },
    )


if __name__ == "__main__":
    main()
