"""seqrl PPO throughput on CartPole-v1 by number of envs, and by number of devices.

    .venv/bin/python -m benchmarks.scaling num_envs [--quick] [--json PATH]
    .venv/bin/python -m benchmarks.scaling devices [--quick] [--json PATH]

Every cell is a fresh process (cold compiles: the persistent compilation cache is off) that
trains ``configs/ppo/cartpole.yaml`` through ``seqrl.loop.run`` and reports the loop's own
``compile_seconds`` and ``env_steps_per_second`` (env steps / seconds inside the jitted chunks).

- ``num_envs``: 4 .. 1024 envs x 128 steps, one device. The peer is the 4-env cell of the same
  run (PureJaxRL's CartPole config, the one ``ppo_cartpole`` races against rejax and SB3).
- ``devices``: 256 envs x 128 steps, one seed, its env batch sharded over 1, 2, 4 ... devices
  (``devices=N``). The peer is the 1-device cell. On a machine with one device, the cells run on
  forced host devices (``--xla_force_host_platform_device_count`` = the number of cores), which
  shows the sharding's overhead and the cores' parallelism, not real multi-device scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import ROOT, load_average, machine, ratio_table, seqrl_revision, write_report

DOC = ROOT / "docs" / "benchmarks.md"
CONFIG = "configs/ppo/cartpole.yaml"
NUM_STEPS = 128
SECTIONS = {
    "num_envs": "## PPO throughput by number of envs (CartPole-v1)",
    "devices": "## PPO device scaling (CartPole-v1, env batch sharded)",
}


def worker(num_envs: int, devices: int, updates: int) -> dict:
    """Trains in this process; prints the loop's summary numbers as one JSON line."""
    import jax

    from seqrl import config as cfg
    from seqrl.loop import run
    from seqrl.runtime import versions

    config = cfg.load_config(
        CONFIG,
        [
            f"num_envs={num_envs}",
            f"ppo.num_steps={NUM_STEPS}",
            f"total_timesteps={num_envs * NUM_STEPS * updates}",
            f"loop.num_chunks={min(updates, 4)}",
            "loop.eval_episodes=8",
            "loop.tensorboard=false",
            f"devices={devices}",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(config, run_dir=Path(tmp) / "run", progress=False, log=lambda _: None).summary
    return {
        "num_envs": num_envs,
        "devices": devices,
        "device_kind": jax.devices()[0].platform,
        "updates": updates,
        "env_steps": summary["total_env_steps"],
        "compile_seconds": summary["compile_seconds"],
        "train_seconds": summary["train_seconds"],
        "env_steps_per_second": summary["env_steps_per_second"],
        "sharding": summary["sharding"],
        "versions": versions(),
    }


def run_cell(num_envs: int, devices: int, updates: int, forced: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["SEQRL_COMPILE_CACHE"] = "0"
    if forced:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={forced}"
    cmd = [sys.executable, "-m", "benchmarks.scaling", "worker", str(num_envs), str(devices)]
    cmd += ["--updates", str(updates)]
    before = load_average()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"[scaling] cell num_envs={num_envs} devices={devices} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = before, load_average()
    print(
        f"num_envs {num_envs:5d}  devices {devices}  compile {result['compile_seconds']:5.1f} s  "
        f"{result['env_steps_per_second']:10,.0f} env steps/s  (load {before[0]})",
        flush=True,
    )
    return result


def device_count() -> int:
    """Devices jax sees here (in a subprocess: this orchestrator never starts jax)."""
    code = "import jax; print(jax.device_count())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def measure(suite: str, quick: bool) -> dict:
    report = {
        "benchmark": suite,
        "quick": quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f".venv/bin/python -m benchmarks run {suite}" + (" --quick" if quick else ""),
        "seqrl_revision": seqrl_revision(),
        "machine": machine(),
        "load_before": load_average(),
        "results": [],
    }
    if suite == "num_envs":
        counts = (4, 64) if quick else (4, 16, 64, 256, 1024)
        # at least 2**19 env steps per cell (2**16 quick), so small cells are not all dispatch
        steps = 2**16 if quick else 2**19
        cells = [(n, 1, max(2 if quick else 8, steps // (n * NUM_STEPS)), None) for n in counts]
        report["peer"] = "4 envs (PureJaxRL's CartPole config)"
    else:
        real = device_count()
        forced = None if real > 1 else max(2, len(os.sched_getaffinity(0)))
        total = real if real > 1 else forced
        counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= total and 256 % n == 0]
        updates = 2 if quick else 8
        cells = [(256, n, updates, forced) for n in counts]
        report["peer"] = "1 device"
        report["forced_host_devices"] = forced
    report["results"] = [run_cell(*cell) for cell in cells]
    report["load_after"] = load_average()
    report["ratios"] = ratios(suite, report["results"])
    return report


def ratios(suite: str, results: list[dict]) -> list[dict]:
    key = "num_envs" if suite == "num_envs" else "devices"
    base = results[0]["env_steps_per_second"]
    return [
        {
            "name": f"{r[key]} {'envs' if key == 'num_envs' else 'devices'} / {results[0][key]}",
            "value": r["env_steps_per_second"] / base,
            "target": None,
            "met": None,
        }
        for r in results[1:]
    ]


def markdown(report: dict) -> str:
    suite, m = report["benchmark"], report["machine"]
    key = "num_envs" if suite == "num_envs" else "devices"
    lines = [
        SECTIONS[suite],
        "",
        f"Command: `{report['command']}` ({report['date']}, seqrl {report['seqrl_revision']}, "
        f"{m['nproc']} cores, {m['cpu'] or 'unknown CPU'}; load average "
        f"{report['load_before'][0]} before, {report['load_after'][0]} after). "
        f"`{CONFIG}` with {NUM_STEPS} steps per env and update (updates per cell in the JSON), "
        "each cell a fresh process with "
        "cold compiles; env steps/s inside the jitted chunks (compile excluded). Ratios against "
        f"{report['peer']}, measured in the same run. Raw numbers: "
        f"`docs/benchmarks/{suite}.json`.",
        "",
    ]
    if suite == "devices" and report.get("forced_host_devices"):
        lines += [
            f"This machine has one device: the cells ran on {report['forced_host_devices']} "
            "forced host devices (`XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{report['forced_host_devices']}`), sharing its {m['nproc']} cores. This measures "
            "the sharded program's overhead on CPU, not multi-device scaling; on a machine with "
            "several GPUs the same command uses the real devices.",
            "",
        ]
    lines += [
        f"| {key} | env steps per update | compile s | env steps/s | load before |",
        "|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r[key]} | {r['num_envs'] * NUM_STEPS:,} | {r['compile_seconds']:.1f} | "
            f"{r['env_steps_per_second']:,.0f} | {r['load_before'][0]} |"
        )
    lines += ["", *ratio_table(report["ratios"], "env steps/s ratio"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["num_envs", "devices", "worker"])
    parser.add_argument("cell", nargs="*", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer cells and updates")
    parser.add_argument("--updates", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.suite == "worker":
        print(json.dumps(worker(args.cell[0], args.cell[1], args.updates)))
        return
    report = measure(args.suite, args.quick)
    print("\n" + markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if not args.quick:
        doc_json = ROOT / "docs" / "benchmarks" / f"{args.suite}.json"
        write_report(DOC, doc_json, SECTIONS[args.suite], report, markdown(report))


if __name__ == "__main__":
    main()
