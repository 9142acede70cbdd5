"""The one training loop: jitted chunks of updates on device under a thin host loop.

An agent hands the loop a :class:`Trainer` of pure functions for ONE seed. The loop vmaps them
over ``num_seeds``, runs ``lax.scan`` over a chunk of updates with the learner state donated,
and between chunks (on the host) advances the progress bar, writes ``metrics.jsonl`` and
TensorBoard events, and saves checkpoints. At the end it evaluates the final policy on device and
writes ``summary.json`` and ``curve.png``. ``--resume`` restores the latest checkpoint and goes
on with the same chunks, so a resumed run ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqrl import config as cfg
from seqrl.errors import UserError
from seqrl.runtime import configure_jax, versions


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What an agent gives the loop (all functions are pure, for one seed).

    ``init(key) -> state``; ``update(state) -> (state, metrics)`` where metrics is a dict of
    scalars including ``episode_return`` (NaN when no episode ended); ``evaluate(state, key,
    num_episodes, deterministic) -> {"returns": [num_episodes], ...}`` (in-context envs add
    ``"episode_returns": [num_episodes, episodes_per_trial]``).
    """

    init: Callable[[jax.Array], Any]
    update: Callable[..., tuple[Any, dict]]
    evaluate: Callable[[Any, jax.Array, int, bool], dict]
    num_updates: int
    steps_per_update: int
    # what an update consumes: "env_steps" (online) or "samples" (offline, from `data`)
    unit: str = "env_steps"
    # device arrays every update reads (an offline dataset): passed to ``update(state, data)``
    # as an argument of the compiled program, never baked into it or checkpointed
    data: Any = None
    # the agent's own pieces (e.g. PPO's network, collect, advantages) for tests and notebooks
    parts: dict = dataclasses.field(default_factory=dict)


def train_fn(trainer: Trainer) -> Callable[[jax.Array], tuple[Any, dict]]:
    """``train(key) -> (state, metrics[num_updates])``: the whole run in one jittable call."""

    def train(key: jax.Array):
        state = trainer.init(key)
        step = _update_fn(trainer, trainer.data)
        return jax.lax.scan(lambda s, _: step(s), state, None, trainer.num_updates)

    return train


def _update_fn(trainer: Trainer, data: Any) -> Callable[[Any], tuple[Any, dict]]:
    if trainer.data is None:
        return trainer.update
    return lambda state: trainer.update(state, data)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """One key per seed; seed i of a run is independent of how many seeds run beside it."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))


def make_chunk(trainer: Trainer, num_updates: int):
    """``chunk(states[S], data) -> (states, metrics[S, num_updates])``: ``num_updates`` updates
    per seed in one ``lax.scan`` (no per-update branching: a ``lax.cond`` here costs ~50%).
    ``data`` is the trainer's dataset (None for online agents), shared by all seeds."""

    def chunk(states, data):
        def per_seed(state):
            step = _update_fn(trainer, data)
            return jax.lax.scan(lambda s, _: step(s), state, None, num_updates)

        return jax.vmap(per_seed)(states)

    return chunk


def plan_chunks(num_updates: int, num_chunks: int) -> list[int]:
    """Chunk sizes summing to ``num_updates``, about ``num_chunks`` of them.

    Equal sizes need one compiled program: prefer a divisor of ``num_updates`` giving between
    half and twice the requested number of chunks; otherwise equal chunks plus one shorter last
    chunk (a second program, compiled when it is reached).
    """
    target = num_updates / num_chunks
    divisors = [
        d
        for d in range(1, num_updates + 1)
        if num_updates % d == 0 and num_chunks / 2 <= num_updates // d <= 2 * num_chunks
    ]
    if divisors:
        size = min(divisors, key=lambda d: (abs(d - target), d))
        return [size] * (num_updates // size)
    size = math.ceil(target)
    sizes = [size] * (num_updates // size)
    if num_updates % size:
        sizes.append(num_updates % size)
    return sizes


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict


def default_run_dir(config_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{config_name}-{stamp}"
    i = 1
    while path.exists():
        path = Path("runs") / f"{config_name}-{stamp}-{i}"
        i += 1
    return path


def prepare_run_dir(run_dir: Path) -> None:
    """Creates ``run_dir`` and checks it is writable before any compile starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to run directory {run_dir}: {e.strerror}") from None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _timed_compile(fn, *args, **jit_kwargs):
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _rows(
    metrics: dict, first_update: int, n: int, trainer: Trainer, t0: float, t1: float
) -> list[dict]:
    """One row per update: mean over seeds of each metric, and the per-seed returns."""
    host = jax.tree.map(np.asarray, metrics)
    rows = []
    seeds = next(iter(host.values())).shape[0]
    for i in range(n):
        update = first_update + i + 1
        if "episode_return" in host:
            returns = [float(r) for r in host["episode_return"][:, i]]
        else:  # offline agents see no episodes while they learn
            returns = [math.nan] * seeds
        finite = [r for r in returns if math.isfinite(r)]
        row = {
            "update": update,
            trainer.unit: update * trainer.steps_per_update,
            # seconds since the run started (compile and host work included), interpolated
            # between the start and end of the chunk
            "wall_seconds": t0 + (t1 - t0) * (i + 1) / n,
            "return_mean": float(np.mean(finite)) if finite else None,
            "return_seeds": returns,
        }
        for key, value in host.items():
            if key != "episode_return":
                row[key] = float(np.mean(value[:, i]))
        rows.append(row)
    return rows


def run(
    config: Any,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    config_name: str = "run",
    stop_after_chunks: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Trains ``config`` into ``run_dir`` (or resumes the run there). See the module docstring.

    ``stop_after_chunks`` stops early (after that many chunks in this call) with a checkpoint,
    leaving a run to be resumed.
    """
    from seqrl.checkpoint import Checkpointer
    from seqrl.logging import JsonlSink, ProgressBar, TensorBoardSink
    from seqrl.plotting import plot_runs

    configure_jax()
    t_start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config_name)
    if not resume and (run_dir / "checkpoints").exists():
        raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir}")
    trainer: Trainer = cfg.agent_module(config.agent).make_trainer(config)
    prepare_run_dir(run_dir)
    log(f"run directory: {run_dir}")
    if not resume:
        (run_dir / "config.yaml.tmp").write_text(_yaml(config))
        os.replace(run_dir / "config.yaml.tmp", run_dir / "config.yaml")
    loop = config.loop
    sizes = plan_chunks(trainer.num_updates, loop.num_chunks)
    num_chunks = len(sizes)
    starts = [sum(sizes[:c]) for c in range(num_chunks)]

    # COMPILE: init, the chunk of updates, evaluation (timed ahead of time, no run yet)
    keys = seed_keys(config.seed, config.num_seeds)
    init, t_init = _timed_compile(jax.vmap(trainer.init), keys)
    abstract = jax.eval_shape(jax.vmap(trainer.init), keys)
    chunks: dict[int, Any] = {}
    compile_seconds = t_init

    def chunk_program(size: int):
        nonlocal compile_seconds
        if size not in chunks:
            chunks[size], seconds = _timed_compile(
                make_chunk(trainer, size), abstract, trainer.data, donate_argnums=0
            )
            compile_seconds += seconds
        return chunks[size]

    chunk_program(sizes[0])
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1_000_003))(keys)
    evaluate_fn = jax.vmap(
        lambda s, k: trainer.evaluate(s, k, loop.eval_episodes, loop.eval_deterministic)
    )
    evaluate, t_eval = _timed_compile(evaluate_fn, abstract, eval_keys)
    compile_seconds += t_eval

    checkpointer = Checkpointer(
        run_dir / "checkpoints", keep=loop.keep_checkpoints, asynchronous=True
    )
    metrics_sink = JsonlSink(run_dir / "metrics.jsonl")
    start_chunk, train_seconds, wall_offset = 0, 0.0, 0.0
    if resume:
        states, meta = checkpointer.restore(abstract)
        start_chunk, train_seconds = meta["chunks_done"], meta["train_seconds"]
        wall_offset = meta.get("wall_seconds", 0.0)
        metrics_sink.trim(meta["updates_done"])
        log(f"resumed from update {meta['updates_done']} (chunk {start_chunk}/{num_chunks})")
    else:
        states = init(keys)
        metrics_sink.trim(0)
    tensorboard = (
        TensorBoardSink(
            run_dir / "tensorboard",
            purge_step=sum(sizes[:start_chunk]) * trainer.steps_per_update or None,
        )
        if loop.tensorboard
        else None
    )

    total_steps = trainer.num_updates * trainer.steps_per_update
    show = loop.progress if progress is None else progress
    bar = ProgressBar(
        total_steps,
        f"{config.agent} {config.env}",
        show,
        completed=sum(sizes[:start_chunk]) * trainer.steps_per_update,
    )
    chunks_run = 0
    try:
        for c in range(start_chunk, num_chunks):
            if stop_after_chunks is not None and chunks_run >= stop_after_chunks:
                break
            first_update, n = starts[c], sizes[c]
            program = chunk_program(n)
            t0 = time.perf_counter()
            states, metrics = program(states, trainer.data)
            metrics = jax.block_until_ready(metrics)
            t1 = time.perf_counter()
            dt = t1 - t0
            rows = _rows(
                metrics,
                first_update,
                n,
                trainer,
                wall_offset + t0 - t_start,
                wall_offset + t1 - t_start,
            )
            train_seconds += dt
            chunks_run += 1
            metrics_sink.write(rows)
            if tensorboard is not None:
                tensorboard.write(rows)
            done = first_update + n
            recent = [r["return_mean"] for r in rows if r["return_mean"] is not None]
            bar.update(
                done * trainer.steps_per_update,
                n * trainer.steps_per_update * config.num_seeds / max(dt, 1e-9),
                recent[-1] if recent else None,
            )
            stopping = stop_after_chunks is not None and chunks_run >= stop_after_chunks
            if (c + 1) % loop.checkpoint_every == 0 or c + 1 == num_chunks or stopping:
                meta = {
                    "chunks_done": c + 1,
                    "updates_done": done,
                    "train_seconds": train_seconds,
                    "wall_seconds": wall_offset + time.perf_counter() - t_start,
                }
                checkpointer.save(done, states, meta)
    finally:
        checkpointer.wait()
        bar.close()
        if tensorboard is not None:
            tensorboard.close()

    if start_chunk + chunks_run < num_chunks:
        log(
            f"stopped after chunk {start_chunk + chunks_run}/{num_chunks}; "
            f"resume with: seqrl train --resume {run_dir}"
        )
        return RunResult(run_dir, {})

    # EVALUATE the final policy on device, then summarize
    evaluation = jax.tree.map(np.asarray, evaluate(states, eval_keys))
    returns = evaluation["returns"]  # [seeds, episodes]
    summary = {
        "agent": config.agent,
        "env": config.env,
        f"total_{trainer.unit}": total_steps,
        "total_updates": trainer.num_updates,
        "compile_seconds": round(compile_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        f"{trainer.unit}_per_second": round(
            total_steps * config.num_seeds / max(train_seconds, 1e-9), 1
        ),
        "final_return_mean": float(np.nanmean(returns)),
        "final_return_std": float(np.nanstd(returns)),
        "final_return_per_seed": [float(r) for r in np.nanmean(returns, axis=1)],
        "eval_episodes": int(returns.shape[1]),
        "eval_deterministic": loop.eval_deterministic,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seed": config.seed,
        "num_seeds": config.num_seeds,
        "devices": [str(d) for d in jax.devices()],
        "versions": versions(),
        "resumed": bool(resume),
    }
    if "episode_returns" in evaluation:  # in-context: held-out tasks, return per episode index
        per_index = np.nanmean(evaluation["episode_returns"], axis=(0, 1))
        summary["final_return_per_episode_index"] = [float(r) for r in per_index]
    write_json_atomic(run_dir / "summary.json", summary)
    plot_runs([run_dir], run_dir / "curve.png", labels=[f"{config.agent} {config.env}"])
    return RunResult(run_dir, summary)


def _yaml(config: Any) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(config), sort_keys=False)
