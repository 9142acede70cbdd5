"""seqrl PPO through its Python API: gymnax CartPole-v1 (``configs/ppo/cartpole.yaml``) or, with
``--task inverted_pendulum``, brax inverted_pendulum (``configs/ppo/brax/inverted_pendulum.yaml``).

Run by :mod:`benchmarks.ppo_cartpole` in seqrl's own ``.venv`` with ``SEQRL_COMPILE_CACHE=0``,
so every compile is cold. The numbers are seqrl's own: ``summary.json`` (compile seconds, train
seconds, env steps/s, final deterministic evaluation over 64 episodes) and ``metrics.jsonl``
(one row per update; ``wall_seconds`` = compile seconds + train seconds up to that update).

``metrics.jsonl``'s ``wall_seconds`` leaves out what the loop does on the host between chunks
(metrics and TensorBoard writes, checkpoints). So that every peer is timed by the same clock,
this worker also reads the real time at which each chunk's rows are handed to the metrics sink
(it wraps ``seqrl.logging.JsonlSink.write`` to note the time; nothing else changes) and reports
both: ``solve`` by the real clock since ``loop.run`` was called, ``solve_loop_clock`` by
``metrics.jsonl``'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SOLVE_RETURNS,
    UpdateRow,
    peak_rss_mb,
    time_to_return,
    timed_imports,
    worker_parser,
    write_result,
    xla_threads,
)

# task -> (config, what it runs)
TASKS = {
    "cartpole": (Path("configs/ppo/cartpole.yaml"), "gymnax CartPole-v1"),
    "inverted_pendulum": (
        Path("configs/ppo/brax/inverted_pendulum.yaml"),
        "brax inverted_pendulum (spring)",
    ),
}


def read_rows(
    metrics_path: Path, chunk_ends: dict[int, float] | None = None
) -> tuple[list[UpdateRow], list[dict]]:
    """Rows of ``metrics.jsonl``; with ``chunk_ends`` (last update of a chunk -> real seconds
    since ``loop.run`` began when its rows were written), ``wall_seconds`` is moved onto the real
    clock: every row of a chunk is shifted by the host time spent up to that chunk's end."""
    raw = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    offsets: list[float] = []
    if chunk_ends:
        offset = 0.0
        for r in reversed(raw):
            if r["update"] in chunk_ends:
                offset = chunk_ends[r["update"]] - float(r["wall_seconds"])
            offsets.append(offset)
        offsets.reverse()
    rows: list[UpdateRow] = []
    for i, r in enumerate(raw):
        episodes = int(round(r.get("episodes") or 0))
        mean = r["return_mean"]
        rows.append(
            UpdateRow(
                env_steps=int(r["env_steps"]),
                wall_seconds=float(r["wall_seconds"]) + (offsets[i] if offsets else 0.0),
                episodes=episodes if mean is not None else 0,
                return_sum=float(mean) * episodes if mean is not None else 0.0,
            )
        )
    return rows, raw


def import_libraries(task: str) -> None:
    """JAX, seqrl's PPO and the task's env library, imported once, on the import clock.

    The env library is imported here, with the other imports, as rejax's own import brings in
    gymnax (and brax) before its clock starts; seqrl would otherwise import it inside
    loop.run, on the clock (gymnax's import alone takes ~1.5 s: it loads seaborn and scipy).
    """
    import jax  # noqa: F401

    import seqrl.agents.ppo  # noqa: F401
    from seqrl import config, logging, loop  # noqa: F401

    if task == "cartpole":
        import seqrl.envs.gymnax  # noqa: F401
    else:
        import seqrl.envs.brax  # noqa: F401


class ChunkClock:
    """The real time at which each chunk's rows reach the metrics sink: ``ends`` maps a chunk's
    last update to its seconds since ``start`` (set just before ``loop.run``).
    :meth:`install` wraps ``seqrl.logging.JsonlSink.write`` to note it; nothing else changes."""

    def __init__(self) -> None:
        self.ends: dict[int, float] = {}
        self.start = 0.0

    def install(self) -> None:
        from seqrl import logging as seqrl_logging

        write = seqrl_logging.JsonlSink.write

        def timed_write(sink: Any, rows: list[dict]) -> None:
            if rows and "update" in rows[-1]:
                self.ends[int(rows[-1]["update"])] = time.perf_counter() - self.start
            write(sink, rows)

        seqrl_logging.JsonlSink.write = timed_write  # type: ignore[method-assign]


def run_loop(config: Any, run_dir: Path, clock: ChunkClock) -> tuple[Any, float]:
    """``loop.run`` into ``run_dir`` on ``clock``; its result and its real seconds."""
    from seqrl import loop

    clock.start = time.perf_counter()
    result = loop.run(config, run_dir=run_dir, progress=False, log=lambda _: None)
    return result, time.perf_counter() - clock.start


def hyperparameters(config: Any, raw: list[dict]) -> dict:
    """What seqrl ran (the config's, and the learning rates ``metrics.jsonl`` logged), under
    the keys rejax's worker reports too."""
    from seqrl import loop

    p, net = config.ppo, config.network
    return {
        "num_envs": config.num_envs,
        "num_steps": p.num_steps,
        "num_updates": len(raw),
        "updates_per_chunk": loop.plan_chunks(len(raw), config.loop.num_chunks)[0],
        "update_epochs": p.update_epochs,
        "num_minibatches": p.num_minibatches,
        "lr_first_update": raw[0]["lr"],
        "lr_last_update": raw[-1]["lr"],
        "gamma": p.gamma,
        "gae_lambda": p.gae_lambda,
        "clip_eps": p.clip_eps,
        "ent_coef": p.ent_coef,
        "vf_coef": p.vf_coef,
        "max_grad_norm": p.max_grad_norm,
        "hidden_sizes": list(net.hidden_sizes),
        "activation": net.activation,
        "normalize_obs": config.wrappers.normalize_obs,
        "normalize_reward": config.wrappers.normalize_reward,
    }


def result_line(
    task: str, config: Any, summary: dict, run_dir: Path, clock: ChunkClock, seconds: dict
) -> dict:
    """The worker's result: seqrl's own numbers (``summary.json``), the solve times by the real
    clock (``solve``) and by ``metrics.jsonl``'s (``solve_loop_clock``). ``seconds``: the
    ``import`` and ``run`` seconds."""
    import jax

    config_path, task_name = TASKS[task]
    threshold = SOLVE_RETURNS[task]
    loop_rows, raw = read_rows(run_dir / "metrics.jsonl")
    rows = read_rows(run_dir / "metrics.jsonl", clock.ends)[0] if clock.ends else loop_rows
    return {
        "peer": "seqrl",
        "algorithm": f"seqrl PPO (agents/ppo.py), {task_name}",
        "config": str(config_path),
        "hyperparameters": hyperparameters(config, raw),
        "env_steps": summary["total_env_steps"],
        "compile_seconds": summary["compile_seconds"],
        "train_seconds": summary["train_seconds"],
        "env_steps_per_second": summary["env_steps_per_second"],
        "final_return": summary["final_return_mean"],
        "final_return_std": summary["final_return_std"],
        "final_eval": f"{summary['eval_episodes']} episodes, deterministic (policy mode)",
        "solve": time_to_return(rows, threshold),
        "solve_clock": "real seconds since loop.run()" if clock.ends else "metrics.jsonl",
        "solve_loop_clock": time_to_return(loop_rows, threshold),
        "import_seconds": round(seconds["import"], 3),
        "run_seconds": round(seconds["run"], 3),
        # loop.run's time outside compile + train: init, metrics, TensorBoard, checkpoints,
        # final evaluation and the curve plot (not in metrics.jsonl's wall_seconds).
        "host_overhead_seconds": round(
            seconds["run"] - summary["compile_seconds"] - summary["train_seconds"], 3
        ),
        "peak_rss_mb": peak_rss_mb(),
        "checkpoints": sum(1 for d in (run_dir / "checkpoints").iterdir() if d.is_dir()),
        "versions": summary["versions"],
        "threads": xla_threads(jax.devices()),
        "updates": rows,
    }


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    _, import_seconds = timed_imports(lambda: import_libraries(args.task))
    from seqrl import config as cfg

    clock = ChunkClock()
    clock.install()
    config = cfg.load_config(
        TASKS[args.task][0],
        ["loop.progress=false", f"total_timesteps={args.total_steps}", f"seed={args.seed}"],
    )
    run_dir = args.workdir / "seqrl-run"
    result, run_seconds = run_loop(config, run_dir, clock)
    seconds = {"import": import_seconds, "run": run_seconds}
    write_result(args.out, result_line(args.task, config, result.summary, run_dir, clock, seconds))


if __name__ == "__main__":
    main()
