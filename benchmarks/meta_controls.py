"""Controls for offline meta-RL on PointRobot: the DT without task information (the floor), the
task-oracle DT (the true goal in every state token: the ceiling of any task inference on this
data) and Meta-DT, on the same data and budget, zero-shot on the held-out goals. Normalized
scores per goal and seed, paired differences with stratified bootstrap intervals
(:mod:`seqrl.stats`), Meta-DT's share of the floor-to-oracle gap.

    python -m benchmarks.meta_controls --out docs/benchmarks/meta_controls.json

A first, small look (16k PPO steps per goal for the experts, 10 episodes per goal, a one-layer
64-wide DT for 1,000 updates, 3 seeds); ``make meta-point`` is the full pipeline.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "meta" / "point_robot"
AGENTS = ("dt", "dt_task_oracle", "meta_dt")


def _env_kwargs(args) -> dict:
    return {"num_train": args.train_goals, "num_test": args.test_goals}


def _data(work: Path, args):
    """Per-goal PPO experts and a dataset of their episodes (each goal's episodes cycling
    through the noise levels)."""
    import seqrl

    experts = seqrl.train(
        CONFIGS / "ppo_per_task.yaml",
        run_dir=work / "ppo",
        progress=False,
        total_timesteps=args.ppo_steps,
        env_kwargs=_env_kwargs(args),
        loop={"num_chunks": 4},
    )
    data = seqrl.collect(
        experts.run_dir,
        args.episodes,
        work / f"point-{args.quality}-v0",
        quality=args.quality,
        noise=args.noise,
        opening=args.opening,
    )
    return experts.summary, data


def _scores(work: Path, dataset: str, args) -> dict[str, np.ndarray]:
    """Each agent trained on the dataset, then its zero-shot normalized score [goals, seeds]."""
    import seqrl
    from seqrl.meta_eval import eval_meta

    budget = {
        "num_seeds": args.seeds,
        "total_updates": args.updates,
        "dataset": dataset,
        "env_kwargs": _env_kwargs(args),
        "dt": {"embed_dim": 64, "num_layers": 1, "warmup_steps": 100},
        "world_model": {"steps": 1500, **({"decode": args.decode} if args.decode else {})},
        "loop": {"num_chunks": 1},
        "meta": {"prompt_warmup": 100, "opening": args.opening},
    }
    scores = {}
    for name in AGENTS:
        run = seqrl.train(CONFIGS / f"{name}.yaml", run_dir=work / name, progress=False, **budget)
        result = eval_meta(run.run_dir, "zero-shot", rounds=2, log=lambda _: None)
        scores[name] = np.asarray(result["per_task_seed_normalized"])
        print(f"{name}: normalized {result['normalized_mean']:.3f}", flush=True)
    return scores


def _z_and_goals(encode, state, traj, goals, h: int):
    """Every step ``t >= h`` of ``traj``: its task vector and its episode's goal."""
    z = np.asarray(encode(state, traj))
    lengths = np.asarray(traj.lengths)
    steps = np.arange(z.shape[1])[None]
    keep = (steps >= h) & (steps < lengths[:, None])
    return z[keep], np.broadcast_to(goals[:, None], (*z.shape[:2], goals.shape[-1]))[keep]


def _linear_probe(x_fit, y_fit):
    """The least-squares linear map (with bias) from x to y fitted on (x_fit, y_fit)."""
    design = lambda a: np.c_[a, np.ones(len(a))]
    weights, *_ = np.linalg.lstsq(design(x_fit), y_fit, rcond=None)
    return lambda x: design(x) @ weights


def _r2(x_fit, y_fit, x, y) -> float:
    """R^2 on (x, y) of the linear probe fitted on (x_fit, y_fit)."""
    residual = ((_linear_probe(x_fit, y_fit)(x) - y) ** 2).sum()
    return float(1 - residual / ((y - y.mean(0)) ** 2).sum())


def _z_probe(work: Path, dataset: str) -> dict:
    """How much of the held-out goal a linear probe reads from Meta-DT's z (seed 0), fitted on
    the training goals' dataset episodes: on the held-out goals' dataset episodes (the data's
    contexts) and on the agent's own zero-shot episodes (its closed-loop contexts)."""
    import jax

    import seqrl
    from seqrl.agents import meta_dt
    from seqrl.data import load_meta_dataset, rollout_trajectories
    from seqrl.evaluate import lane_rollout

    policy = seqrl.load(work / "meta_dt")
    state, trainer = policy.seed_state(0), policy.trainer
    family, h = trainer.meta.family, policy.config.world_model.horizon
    goals = np.asarray(family.split("all")).reshape(family.num_train + family.num_test, -1)
    encode = jax.jit(lambda s, traj: meta_dt.task_vectors(trainer, s, traj))
    fit = {}
    for split in ("train", "test"):
        traj, tasks, _ = load_meta_dataset(dataset, family, split)
        fit[split] = _z_and_goals(encode, state, traj, goals[tasks], h)
    fns = trainer.meta.acting(state, "test", True, None)
    carry = fns.initial_carry(fns.empty_prompt())
    run = lambda key: lane_rollout(
        family, fns.params, key, fns.act, fns.observe, carry, family.episode_length
    )[1]
    own = rollout_trajectories(jax.jit(run)(jax.random.PRNGKey(0)), family.episode_length)
    lane_goals = np.repeat(goals[family.num_train :], policy.config.num_envs, axis=0)
    closed = _z_and_goals(encode, state, own, lane_goals, h)
    return {
        "r2_train_fit": _r2(*fit["train"], *fit["train"]),
        "r2_heldout_data_contexts": _r2(*fit["train"], *fit["test"]),
        "r2_heldout_closed_loop": _r2(*fit["train"], *closed),
        # the probe's reading of held-out tasks, every step t >= h (for the figure)
        "heldout_data_contexts": _readout(fit["train"], fit["test"]),
        "heldout_closed_loop": _readout(fit["train"], closed),
    }


def _readout(fitted, read, max_points: int = 400) -> dict:
    """The linear probe fitted on ``fitted`` (z, task), read on ``read``: the true and the
    predicted task of (at most ``max_points``, evenly spaced) steps."""
    z, task = read
    keep = np.linspace(0, len(z) - 1, min(max_points, len(z))).astype(int)
    return {"true": task[keep].tolist(), "predicted": _linear_probe(*fitted)(z[keep]).tolist()}


def _statistics(scores: dict[str, np.ndarray]) -> dict:
    from seqrl import stats

    gap = stats.gap_closed(scores["meta_dt"], scores["dt"], scores["dt_task_oracle"])
    return {
        "normalized": {name: stats.interval(s) for name, s in scores.items()},
        "oracle_minus_dt": stats.paired_difference(scores["dt_task_oracle"], scores["dt"]),
        "meta_dt_minus_dt": stats.paired_difference(scores["meta_dt"], scores["dt"]),
        "meta_dt_gap_closed": stats.interval(np.nan_to_num(gap)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/meta_controls.json")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "meta-controls")
    parser.add_argument("--quality", default="expert", choices=["expert", "medium", "mixed"])
    parser.add_argument("--ppo-steps", type=int, default=16_000, help="PPO steps per goal")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per goal")
    parser.add_argument(
        "--noise", type=float, nargs="+", default=[0.0], help="action noise levels per goal"
    )
    parser.add_argument(
        "--opening",
        nargs="+",
        default=None,
        help="every episode's first actions, flattened (x y x y ...): a fixed probe that the "
        "agents repeat (default: the config's meta.opening; 'none': no probe)",
    )
    parser.add_argument(
        "--decode",
        choices=["step", "task"],
        default=None,
        help="world_model.decode (default: the config's)",
    )
    parser.add_argument("--train-goals", type=int, default=45)
    parser.add_argument("--test-goals", type=int, default=5)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.opening is None:
        from seqrl.config import load_config

        config = load_config(CONFIGS / "meta_dt.yaml")
        args.opening = [list(a) for a in config.meta.opening]
    elif args.opening == ["none"]:
        args.opening = []
    else:
        args.opening = np.reshape(np.asarray(args.opening, float), (-1, 2)).tolist()
    start = time.perf_counter()
    experts, data = _data(args.work, args)
    scores = _scores(args.work, str(data.path), args)
    probe = _z_probe(args.work, str(data.path))
    print(f"linear probe z -> goal: { {k: v for k, v in probe.items() if 'r2' in k} }", flush=True)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "command": "python -m benchmarks.meta_controls",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "experts_final_return": experts["final_return_mean"],
        "data_return_mean": float(np.mean(np.asarray(data.trajectories.returns))),
        "per_task_seed_normalized": {name: s.tolist() for name, s in scores.items()},
        **_statistics(scores),
        "z_probe": probe,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("oracle_minus_dt", "meta_dt_minus_dt")}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
