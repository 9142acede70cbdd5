"""PPO backbones side by side: MLP, GRU, LSTM, S5, S4D at equal width, by rollout length.

    .venv/bin/python -m benchmarks.backbones            # full run: writes docs/benchmarks*
    .venv/bin/python -m benchmarks.backbones --quick    # smoke test (tiny budgets, no docs)

For every (backbone, rollout length T) one fresh process (cold compiles: the persistent
compilation cache is off) builds seqrl's PPO on ``popgym/StatelessCartPoleEasy`` with 16 envs,
width 64 (MLP: two hidden layers of 64; sequence models: d_model 64, one layer, state size 64,
a 64-unit head), 4 epochs x 4 minibatches, and measures

- compile seconds: the jitted PPO update (collect T steps, GAE, 4 x 4 SGD steps), lowered and
  compiled ahead of time, plus the policy's init;
- env steps per second: whole PPO updates (acting and learning), after a warm-up update.

All configurations run one after another in one invocation, so ratios between them are
measured under the same machine load (recorded before and after each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import ROOT, load_average, machine, seqrl_revision, write_report

DOC = ROOT / "docs" / "benchmarks.md"
DOC_JSON = ROOT / "docs" / "benchmarks" / "backbones.json"
SECTION = "## PPO backbones by rollout length (StatelessCartPole)"
COMMAND = ".venv/bin/python -m benchmarks.backbones"
BACKBONES = ("mlp", "gru", "lstm", "s5", "s4d")
LENGTHS = (128, 512, 2048)
ENV = "popgym/StatelessCartPoleEasy"
NUM_ENVS = 16


# PureJaxRL-style S5 PPO on CartPole (PureJaxRL's own S5 PPO, measured earlier on this machine:
# 110 s to compile when quiet): popjaxrl's S5 size (d_model 256, P 256, 4 layers), 4 envs x 128
# steps
REFERENCE_CELL = [
    "env=gymnax/CartPole-v1",
    "num_envs=4",
    "ppo.num_steps=128",
    "total_timesteps=4096",
    "network.backbone=s5",
    "network.d_model=256",
    "network.state_size=256",
    "network.num_layers=4",
    "network.hidden_sizes=[256]",
]


def overrides(backbone: str, num_steps: int, env: str) -> list[str]:
    if backbone == "s5-popjaxrl":
        return REFERENCE_CELL
    return [
        f"env={env}",
        f"num_envs={NUM_ENVS}",
        f"ppo.num_steps={num_steps}",
        f"total_timesteps={NUM_ENVS * num_steps * 8}",
        f"network.backbone={backbone}",
        "network.hidden_sizes=" + ("[64, 64]" if backbone == "mlp" else "[64]"),
        "network.d_model=64",
        "network.num_layers=1",
        "network.state_size=64",
    ]


def worker(backbone: str, num_steps: int, env: str, updates: int) -> dict:
    """Runs inside the measuring process."""
    import jax

    from seqrl import config as cfg
    from seqrl.agents import ppo
    from seqrl.loop import init_seeds, make_chunk

    conf = cfg.load_config("configs/ppo/cartpole.yaml", overrides(backbone, num_steps, env))
    num_envs, num_steps = conf.num_envs, conf.ppo.num_steps
    trainer = ppo.make_trainer(conf)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    t0 = time.perf_counter()
    init = jax.jit(init_seeds(trainer)).lower(keys).compile()
    abstract = jax.eval_shape(jax.vmap(trainer.init), keys)
    step = jax.jit(make_chunk(trainer, 1), donate_argnums=0).lower(abstract, None).compile()
    compile_seconds = time.perf_counter() - t0
    state = init(keys)
    state, _ = jax.block_until_ready(step(state, None))  # warm-up
    t0 = time.perf_counter()
    for _ in range(updates):
        state, metrics = step(state, None)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    return {
        "backbone": backbone,
        "num_steps": num_steps,
        "compile_seconds": round(compile_seconds, 2),
        "env_steps_per_second": round(updates * num_envs * num_steps / seconds, 1),
        "updates_timed": updates,
    }


def run_one(backbone: str, num_steps: int, env: str, updates: int) -> dict:
    load_before = load_average()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.backbones",
            "--worker",
            backbone,
            str(num_steps),
            "--env",
            env,
            "--updates",
            str(updates),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SEQRL_COMPILE_CACHE": "0"},
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{backbone} T={num_steps} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = load_before, load_average()
    return result


def markdown(report: dict) -> str:
    rows = report["results"]
    by = {(r["backbone"], r["num_steps"]): r for r in rows}
    lines = [
        SECTION,
        "",
        f"Command: `{COMMAND}` ({report['date']}, seqrl {report['seqrl_revision']}, "
        f"{report['machine']['nproc']} cores, {report['machine']['cpu']}; load average "
        f"{report['load_before'][0]} before, {report['load_after'][0]} after). PPO on "
        f"`{report['env']}`, {NUM_ENVS} envs, width 64, 4 epochs x 4 minibatches; compiles cold "
        "(persistent cache off), one fresh process per cell, all cells in one invocation.",
        "",
        "| backbone | "
        + " | ".join(f"compile s (T={t})" for t in LENGTHS)
        + " | "
        + " | ".join(f"steps/s (T={t})" for t in LENGTHS)
        + " |",
        "|---|" + "---|" * (2 * len(LENGTHS)),
    ]
    for b in BACKBONES:
        cells = [by.get((b, t)) for t in LENGTHS]
        comp = [f"{c['compile_seconds']:.1f}" if c else "-" for c in cells]
        sps = [f"{c['env_steps_per_second']:,.0f}" if c else "-" for c in cells]
        lines.append(f"| {b} | " + " | ".join(comp) + " | " + " | ".join(sps) + " |")
    lines.append("")
    ratio = [
        by[("s5", t)]["env_steps_per_second"] / by[("gru", t)]["env_steps_per_second"]
        for t in LENGTHS
        if ("s5", t) in by and ("gru", t) in by
    ]
    ref = by.get(("s5-popjaxrl", 128))
    if ref:
        lines.append(
            f"PureJaxRL-style S5 PPO on CartPole at popjaxrl's size (d_model 256, state 256, "
            f"4 layers, 4 envs x 128 steps): compile {ref['compile_seconds']:.1f} s, "
            f"{ref['env_steps_per_second']:,.0f} env steps/s (PureJaxRL's own S5 PPO, measured "
            "earlier on this machine, took 110 s to compile when quiet, 463 s under load)."
        )
        lines.append("")
    if ratio:
        lines.append(
            "S5 / GRU env steps per second: "
            + ", ".join(f"T={t}: {r:.2f}x" for t, r in zip(LENGTHS, ratio))
            + "."
        )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=128 only, 1 timed update")
    parser.add_argument(
        "--reference-only", action="store_true", help="only the popjaxrl-size S5 compile cell"
    )
    parser.add_argument("--worker", nargs=2, metavar=("BACKBONE", "T"), help=argparse.SUPPRESS)
    parser.add_argument("--env", default=ENV, help="environment (default: %(default)s)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per cell")
    parser.add_argument("--json", type=Path, help="also write the report here (any mode)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.env, args.updates)))
        return
    lengths = (128,) if args.quick else LENGTHS
    updates = 1 if args.quick else args.updates
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seqrl_revision": seqrl_revision(),
        "machine": machine(),
        "env": args.env,
        "load_before": load_average(),
        "results": [],
    }
    cells = [] if args.reference_only else [(b, t) for t in lengths for b in BACKBONES]
    cells.append(("s5-popjaxrl", 128))
    for b, t in cells:
        r = run_one(b, t, args.env, updates)
        print(
            f"{b:11s} T={t:5d}  compile {r['compile_seconds']:6.1f} s  "
            f"{r['env_steps_per_second']:10,.0f} steps/s  (load {r['load_before'][0]})",
            flush=True,
        )
        report["results"].append(r)
    report["load_after"] = load_average()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.quick or args.reference_only:
        return
    write_report(DOC, DOC_JSON, SECTION, report, markdown(report))


if __name__ == "__main__":
    main()
