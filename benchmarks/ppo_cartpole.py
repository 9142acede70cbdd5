"""PPO on CartPole-v1, side by side: seqrl vs rejax vs Stable-Baselines3, in one invocation.

    .venv/bin/python -m benchmarks.ppo_cartpole           # full run: writes docs/benchmarks*
    .venv/bin/python -m benchmarks.ppo_cartpole --quick   # smoke test of the plumbing (~1-2 min)

Each peer runs, one after another, in its own process and interpreter, and writes one JSON line:

- seqrl (this repo's ``.venv``; :mod:`benchmarks.peer_seqrl`), ``configs/ppo/cartpole.yaml``,
  with ``SEQRL_COMPILE_CACHE=0`` so compiles are cold;
- rejax 0.1.3 (``.venv-rejax``; :mod:`benchmarks.peer_rejax`) with the same hyperparameters;
- Stable-Baselines3 (``.venv-sb3``; :mod:`benchmarks.peer_sb3`) with rl-zoo's config, torch on
  one thread.

The two peer venvs are created on first use from ``benchmarks/requirements-*.txt`` (exact pins)
and rebuilt when that file changes. The orchestrator checks that seqrl and rejax really ran the
same hyperparameters, records the machine (cores, load average before and after each peer),
thread settings and versions, prints one table with the target ratios, and (full run only)
writes ``docs/benchmarks/ppo_cartpole.json`` and its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    bench_workdir,
    cold_compile_env,
    load_average,
    observed_and_notes,
    print_run,
    ratio_table,
    replace_section,
    run_header,
    run_process,
    save_report,
    section_notes,
    versions_text,
)

DOC = ROOT / "docs" / "benchmarks.md"
DOC_JSON = ROOT / "docs" / "benchmarks" / "ppo_cartpole.json"
SECTION = "## PPO on CartPole-v1: seqrl vs rejax vs Stable-Baselines3"
NOTES_START = "<!-- ppo_cartpole:notes:start -->"
NOTES_END = "<!-- ppo_cartpole:notes:end -->"
COMMAND = ".venv/bin/python -m benchmarks.ppo_cartpole"

PEERS = ("seqrl", "rejax", "sb3")
LABELS = {"seqrl": "seqrl PPO", "rejax": "rejax PPO", "sb3": "SB3 PPO"}
VENVS = {"rejax": ".venv-rejax", "sb3": ".venv-sb3"}
FULL_STEPS = {"seqrl": 500_000, "rejax": 500_000, "sb3": 100_000}
QUICK_STEPS = {"seqrl": 20_480, "rejax": 20_480, "sb3": 5_120}
# (name, numerator peer, denominator peer, metric, comparison, target)
TARGETS = (
    ("seqrl / rejax env steps/s", "seqrl", "rejax", "env_steps_per_second", ">=", 1.2),
    ("seqrl / SB3 env steps/s", "seqrl", "sb3", "env_steps_per_second", ">=", 40.0),
    ("seqrl / SB3 wall-to-475", "seqrl", "sb3", "wall_to_475", "<=", 0.2),
    ("seqrl / SB3 wall-to-475 (10-episode window)", "seqrl", "sb3", "wall_to_475_w10", "<=", 0.2),
    (
        "seqrl / SB3 wall-to-475, seqrl's compile cache warm",
        "seqrl",
        "sb3",
        ("wall_to_475_warm", "wall_to_475"),
        "<=",
        0.2,
    ),
)


# ---------------------------------------------------------------------------------------------
# Peer environments
# ---------------------------------------------------------------------------------------------


def ensure_venv(peer: str, log_dir: Path) -> Path:
    """The peer's interpreter, creating or rebuilding its venv when its requirements changed."""
    venv = ROOT / VENVS[peer]
    requirements = ROOT / "benchmarks" / f"requirements-{peer}.txt"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    base = shutil.which("python3") or sys.executable
    log = log_dir / f"setup-{peer}.log"
    print(f"[setup] {venv.name}: creating from {requirements.name} (log: {log})", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
        [str(python), "-m", "pip", "check"],
    ]
    with log.open("w") as out:
        for cmd in steps:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(
                    f"[setup] {' '.join(cmd[:4])} ... failed (exit {done.returncode}); see {log}"
                )
    stamp.write_text(digest + "\n")
    return python


# ---------------------------------------------------------------------------------------------
# Running the peers
# ---------------------------------------------------------------------------------------------


def compact_curve(rows: list[dict]) -> dict[str, Any]:
    """Per-update rows as one short list per update (keeps the JSON file small)."""
    columns = ["env_steps", "wall_seconds", "episodes", "return_sum"]
    return {
        "columns": columns,
        "rows": [
            [r["env_steps"], round(r["wall_seconds"], 3), r["episodes"], round(r["return_sum"], 1)]
            for r in rows
        ],
    }


def seqrl_updates_per_chunk(task: str, steps: int) -> int:
    """The updates per jitted chunk of seqrl's loop for ``task`` at ``steps`` env steps (its
    config's ``loop.num_chunks`` through :func:`seqrl.loop.plan_chunks`): a peer that chunks
    its own loop (rejax) runs the same chunks."""
    from benchmarks.peer_seqrl import TASKS
    from seqrl import config as cfg
    from seqrl.loop import plan_chunks

    config = cfg.load_config(TASKS[task][0], [f"total_timesteps={steps}"])
    return plan_chunks(config.num_updates, config.loop.num_chunks)[0]


def peer_command(peer: str, python: Path, steps: int, out: Path, scratch: Path, task: str):
    """The command line of one peer worker (``python -m benchmarks.peer_<peer>``)."""
    return [
        str(python),
        "-m",
        f"benchmarks.peer_{peer}",
        "--total-steps",
        str(steps),
        "--out",
        str(out),
        "--workdir",
        str(scratch),
        "--task",
        task,
        "--updates-per-chunk",
        str(seqrl_updates_per_chunk(task, steps)),
    ]


def peer_env(compile_cache: Path | None) -> dict[str, str]:
    """The worker's environment: compiles cold, or through the persistent cache in
    ``compile_cache``."""
    env = cold_compile_env()
    if compile_cache is not None:
        env["SEQRL_COMPILE_CACHE"] = "1"
        env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache)
    return env


def add_solve_times(result: dict) -> None:
    """``wall_to_<threshold>`` / ``steps_to_<threshold>`` (``_w10``: 10-episode window) from the
    result's ``solve``; None where never reached."""
    threshold = f"{result['solve']['threshold']:g}"
    for window, suffix in (("100", ""), ("10", "_w10")):
        solve = result["solve"]["windows"][window]
        reached = None if solve is None else round(solve["wall_seconds"], 2)
        result[f"wall_to_{threshold}{suffix}"] = reached
        result[f"steps_to_{threshold}{suffix}"] = None if solve is None else solve["env_steps"]


def run_peer(
    peer: str,
    python: Path,
    steps: int,
    workdir: Path,
    timeout: float,
    task: str = "cartpole",
    compile_cache: Path | None = None,
    name: str | None = None,
) -> dict:
    """Runs one peer worker on ``task`` to the end; its result plus the process's wall time and
    peak RSS. ``wall_to_<threshold>`` / ``steps_to_<threshold>`` (``_w10``: 10-episode window)
    say when it first reached the task's solve threshold. Compiles are cold unless
    ``compile_cache`` names a persistent compilation cache (seqrl's) to use; ``name`` (default
    ``peer``) names the run's files in ``workdir``."""
    name = name or peer
    out = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    scratch = workdir if name == peer else workdir / name  # the worker's run directories
    scratch.mkdir(exist_ok=True)
    cmd = peer_command(peer, python, steps, out, scratch, task)
    env = peer_env(compile_cache)
    result, wall = run_process(name, cmd, out, log, timeout, env, what=f": {steps:,} env steps")
    result["updates"] = compact_curve(result["updates"])
    result["command"] = (
        " ".join(cmd[:3])
        + f" --total-steps {steps}"
        + ("" if task == "cartpole" else f" --task {task}")
    )
    add_solve_times(result)
    print(f"[run] {name}: done in {wall:.1f} s", flush=True)
    return result


def warm_cache_run(steps: int, workdir: Path, timeout: float, task: str) -> dict:
    """seqrl once more with its persistent compilation cache warm (as on any run after the first
    of a config): one run fills a fresh cache, a second is measured."""
    cache = workdir / "jax-cache"
    shutil.rmtree(cache, ignore_errors=True)
    python = Path(sys.executable)
    run_peer("seqrl", python, steps, workdir, timeout, task, cache, name="seqrl-fill-cache")
    return run_peer("seqrl", python, steps, workdir, timeout, task, cache, name="seqrl-warm")


def check_same_config(results: dict[str, dict]) -> list[str]:
    """Where seqrl's and rejax's hyperparameters differ (empty when they match)."""
    if "seqrl" not in results or "rejax" not in results:
        return []
    a, b = results["seqrl"]["hyperparameters"], results["rejax"]["hyperparameters"]
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        numbers = isinstance(x, int | float) and isinstance(y, int | float)
        same = math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-9) if numbers else x == y
        if not same:
            diffs.append(f"{key}: seqrl {x!r} vs rejax {y!r}")
    return diffs


def ratios(results: dict[str, dict], targets: tuple = TARGETS) -> list[dict]:
    """``targets``: (name, numerator peer, denominator peer, metric, ">=" or "<=", target or
    None); ``metric`` may be a (numerator's, denominator's) pair."""
    rows = []
    for name, num, den, metric, op, target in targets:
        num_metric, den_metric = (metric, metric) if isinstance(metric, str) else metric
        x = results.get(num, {}).get(num_metric)
        y = results.get(den, {}).get(den_metric)
        value = None if x is None or not y else x / y
        met = None
        if value is not None and target is not None:
            met = value >= target if op == ">=" else value <= target
        shown = None if target is None else f"{op} {target:g}"
        rows.append({"name": name, "value": value, "target": shown, "met": met})
    return rows


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "not reached"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


# (row label, result key or None for the load averages, digits)
ROWS = (
    ("env steps trained", "env_steps", 0),
    ("compile s", "compile_seconds", 1),
    ("env steps/s (training, compile excluded)", "env_steps_per_second", 0),
    ("wall-to-475 s, incl. compile (100-episode mean)", "wall_to_475", 1),
    ("env steps to 475 (100-episode mean)", "steps_to_475", 0),
    ("wall-to-475 s, incl. compile (10-episode mean)", "wall_to_475_w10", 1),
    ("env steps to 475 (10-episode mean)", "steps_to_475_w10", 0),
    ("compile s, compile cache warm", "compile_seconds_warm", 1),
    ("wall-to-475 s, compile cache warm (100-episode mean)", "wall_to_475_warm", 1),
    ("final return (64 eval episodes, deterministic)", "final_return", 1),
    ("peak RSS MB", "peak_rss_mb", 0),
    ("process wall s (imports to exit)", "process_wall_seconds", 1),
    ("load average before / after", None, 0),
)


def peer_table(report: dict, labels: dict[str, str], rows: tuple) -> str:
    """A peer comparison's table, a column per peer that ran (``rows``: (label, result key or
    None for the load averages, digits); a ``*_warm`` key is seqrl's alone), then its ratios."""
    results = report["results"]
    peers = [p for p in PEERS if p in results]
    head = "| | " + " | ".join(labels[p] for p in peers) + " |"
    lines = [head, "|---" * (len(peers) + 1) + "|"]
    for label, key, digits in rows:
        if key is None:
            cells = [
                f"{results[p]['load_before'][0]} / {results[p]['load_after'][0]}" for p in peers
            ]
        elif key.endswith("_warm"):  # seqrl alone has a persistent cache
            cells = [fmt(results[p].get(key), digits) if p == "seqrl" else "-" for p in peers]
        else:
            cells = [fmt(results[p].get(key), digits) for p in peers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *ratio_table(report["ratios"])]
    return "\n".join(lines)


def table(report: dict) -> str:
    return peer_table(report, LABELS, ROWS)


def facts(report: dict) -> list[str]:
    """Observations computed from this run, for the doc."""
    results, out = report["results"], []
    seqrl = results.get("seqrl")
    if seqrl:
        loop_solve = seqrl["solve_loop_clock"]["windows"]["100"]
        line = (
            f"seqrl's `loop.run` took {seqrl['run_seconds']:.1f} s: "
            f"{seqrl['compile_seconds']:.1f} s compiling, {seqrl['train_seconds']:.1f} s in the "
            f"jitted chunks and {seqrl['host_overhead_seconds']:.1f} s on the host (setup, "
            f"metrics, TensorBoard, {seqrl.get('checkpoints', 'its')} checkpoints, final "
            "evaluation, curve plot)."
        )
        if loop_solve is not None and seqrl["wall_to_475"] is not None:
            line += (
                " `metrics.jsonl`'s `wall_seconds` counts only compile + chunks: by that clock "
                f"seqrl reaches 475 at {loop_solve['wall_seconds']:.1f} s, by the real clock "
                f"at {seqrl['wall_to_475']:.1f} s."
            )
        out.append(line)
    for peer in PEERS:
        r = results.get(peer)
        if r and r["wall_to_475"] and r["compile_seconds"]:
            share = r["compile_seconds"] / r["wall_to_475"]
            after = " (its evaluation's compile, after training, included)" * (peer == "seqrl")
            out.append(f"{LABELS[peer]}: compile s is {share:.0%} of its wall-to-475{after}.")
    if report["quick"]:
        out.append("Quick mode: tiny budgets to test the plumbing; these ratios mean nothing.")
    missed = [r["name"] for r in report["ratios"] if r["met"] is False]
    out.append(
        "Targets missed in this run: " + ", ".join(missed) + "." if missed else "All targets met."
    )
    if report["config_diffs"]:
        out.append("CONFIG MISMATCH seqrl vs rejax: " + "; ".join(report["config_diffs"]))
    return out


def peer_versions(report: dict, labels: dict[str, str]) -> str:
    """The Versions line of a peer comparison: each peer's packages, under its label."""
    results = report["results"]
    return versions_text({labels[p]: results[p]["versions"] for p in PEERS if p in results})


def measured_on(report: dict) -> str:
    """When, at which commit and on what machine a peer comparison ran, and the load: lines of
    its section that end in "per peer", for the caller's "in the table" on the next line."""
    m = report["machine"]
    return f"""Measured {report["date"]} (seqrl at
{report.get("seqrl_revision", "an unrecorded commit")}) on {m["nproc"]} cores
({m["cpu"] or "unknown CPU"}, {m["memory_gb"]} GB RAM), no GPU, {m["platform"]}. Load average
(1 min): {report["load_before"][0]} before the run, {report["load_after"][0]} after it; per peer"""


def markdown(report: dict, notes: str) -> str:
    m, results = report["machine"], report["results"]
    threads = report["threads"]
    return f"""{SECTION}

Command: `{COMMAND}`
(`--quick`: a smoke test with tiny budgets). One invocation runs the three peers one after
another, each in its own process. {measured_on(report)}
in the table. The machine is shared, so absolute numbers move 2-8x with load; the ratios come
from one side-by-side run. Raw numbers and per-update curves: `docs/benchmarks/ppo_cartpole.json`.

{table(report)}

What each peer runs:
- **seqrl**: `configs/ppo/cartpole.yaml` through `seqrl.loop.run` (gymnax 1.0.1 CartPole-v1,
  PureJaxRL's hyperparameters: 4 envs x 128 steps, 976 updates = 499,712 steps, 4 epochs x 4
  minibatches, lr 2.5e-4 annealed linearly per update, gamma 0.99, lambda 0.95, clip 0.2, ent
  0.01, vf 0.5, max grad norm 0.5, 64x64 tanh), 8 jitted chunks of 122 updates (the config's
  `loop.num_chunks: 10`, rounded to equal chunks), a checkpoint after every chunk,
  `SEQRL_COMPILE_CACHE=0` (cold compiles). Then twice more with seqrl's persistent compilation
  cache in a fresh folder: the first run fills it, the second is the *compile cache warm* row
  (what every run of a config after its first gets).
- **rejax** 0.1.3 (gymnax 0.0.9, its own venv): `rejax.PPO` with the same hyperparameters,
  checked key by key against seqrl's by the script (a mismatch is printed and recorded). rejax
  does not anneal the learning rate itself: an optax schedule equal to PureJaxRL's is passed as
  `learning_rate`. Its `train_iteration` runs in the same jitted chunks as seqrl's (rejax's own
  `train` would also run evaluation rollouts inside the scan). Differences that stay, because
  they are rejax's implementation, not its configuration: separate actor and critic networks
  and Adam optimizers (eps 1e-8, default init), elementwise gradient clipping (`optax.clip`, not
  a global-norm clip), no bootstrapping on time-limit truncation.
- **SB3** {results.get("sb3", {}).get("versions", {}).get("stable_baselines3", "")} (torch CPU,
  `torch.set_num_threads(1)`): rl-zoo's CartPole-v1 config, 8 envs x 32 steps, batch 256,
  20 epochs, gamma 0.98, lambda 0.8, ent 0, learning rate and clip range linear from 1e-3 and
  0.2, 1e5 steps, MlpPolicy 64x64 tanh.

How it is measured:
- *compile s*: ahead-of-time compiles of init, one chunk of updates and the final evaluation
  (seqrl's own `compile_seconds`: tracing, init and chunk compiled side by side before
  training, the evaluation traced while the first chunk trains and compiled after training;
  the same three programs one after another, all before training, for rejax);
  SB3 compiles nothing.
- *env steps/s*: env steps trained / seconds inside the training chunks (SB3: inside `learn`).
- *wall-to-475*: real seconds from the start of training (seqrl: the call of `loop.run`; rejax:
  before `PPO.create`; SB3: before the model is built), compile included, until the training
  episodes that ended in the most recent updates (at least 100 episodes: Gym's definition of
  solving CartPole-v1; the ratio target is judged on this one) average >= 475. The 10-episode
  window is shown too: it also credits a policy that touches 500 briefly and falls back
  again. One seed per peer, so steps-to-475 is a single draw. Every peer logs the same per-update
  statistic (episodes that ended in the update, and their returns); times inside a jitted chunk
  are interpolated between the chunk's ends, as seqrl's loop does. `env steps to 475` is where
  that happened.
- *final return*: 64 evaluation episodes with the policy's mode after training.
- *peak RSS*: `ru_maxrss` of the peer's process.
- Threads: XLA_FLAGS {threads["XLA_FLAGS"]}, i.e. XLA's own CPU thread pool over the
  {m["nproc"]} cores for both JAX peers; torch intra-op threads
  {threads.get("torch_intra_op_threads", "n/a")} (inter-op {
        threads.get("torch_inter_op_threads", "n/a")
    }).
- Versions: {peer_versions(report, LABELS)}.

{observed_and_notes(facts(report), (NOTES_START, NOTES_END), notes)}"""


def write_doc(
    report: dict,
    section_heading: str = SECTION,
    notes_markers: tuple[str, str] = (NOTES_START, NOTES_END),
    render: Any = None,
) -> None:
    """Replaces a benchmark's section of docs/benchmarks.md, keeping its hand-written notes block
    (``render(report, notes)`` makes the section; default: this benchmark's :func:`markdown`),
    and says so."""
    notes = section_notes(DOC, section_heading, notes_markers)
    replace_section(DOC, section_heading, (render or markdown)(report, notes))
    print(f"table: {DOC.relative_to(ROOT)}")


def parse_args(description: str) -> argparse.Namespace:
    """The command line of a peer comparison; ``args.peers`` is the checked list of peers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a plumbing smoke test")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS)
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per peer")
    parser.add_argument("--json", type=Path, help="also write the report here (any mode)")
    args = parser.parse_args()
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; allowed: {', '.join(PEERS)}")
    return args


def compare(
    args: argparse.Namespace,
    report: dict[str, Any],
    budgets: dict[str, int],
    timeout: float,
    task: str = "cartpole",
    targets: tuple = TARGETS,
    warm: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Runs ``args.peers`` on ``task`` one after another into ``report`` (which names the
    benchmark and its command); the report and the run's scratch folder. ``warm``: seqrl also
    runs with its compilation cache warm (:func:`warm_cache_run`)."""
    workdir = bench_workdir(report["benchmark"], args.quick)

    # SETUP every interpreter before any timing starts.
    peers = args.peers
    pythons = {p: Path(sys.executable) if p == "seqrl" else ensure_venv(p, workdir) for p in peers}

    # RUN the peers one after another.
    report.update({**run_header(report["command"], args.quick), "load_before": load_average()})
    results = {p: run_peer(p, pythons[p], budgets[p], workdir, timeout, task) for p in peers}
    if warm and "seqrl" in results:
        again = warm_cache_run(budgets["seqrl"], workdir, timeout, task)
        results["seqrl"]["warm_cache_run"] = {
            k: again[k] for k in ("compile_seconds", "env_steps_per_second", "solve", "run_seconds")
        }
        results["seqrl"]["compile_seconds_warm"] = again["compile_seconds"]
        for key in [k for k in again if k.startswith(("wall_to_", "steps_to_"))]:
            results["seqrl"][f"{key}_warm"] = again[key]
    report["load_after"] = load_average()
    jax_threads = next((r["threads"] for p, r in results.items() if p != "sb3"), {})
    report["threads"] = {
        "XLA_FLAGS": jax_threads.get("XLA_FLAGS", os.environ.get("XLA_FLAGS", "unset")),
        **results.get("sb3", {}).get("threads", {}),
    }
    report["config_diffs"] = check_same_config(results)
    report["ratios"] = ratios(results, targets)
    report["results"] = results
    if report["config_diffs"]:
        print("\nWARNING: seqrl and rejax ran different hyperparameters:", file=sys.stderr)
        for d in report["config_diffs"]:
            print("  " + d, file=sys.stderr)
    return report, workdir


def save(args: argparse.Namespace, report: dict, workdir: Path, doc_json: Path) -> bool:
    """Writes the report as JSON: into ``doc_json`` after a full run of every peer (then True:
    the caller writes its doc section), else into the run's scratch folder."""
    full = not args.quick and set(args.peers) == set(PEERS)
    save_report(report, doc_json if full else workdir / f"{report['benchmark']}.json", args.json)
    return full


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    budgets = QUICK_STEPS if args.quick else FULL_STEPS
    timeout = args.timeout or (600.0 if args.quick else 1800.0)
    report = {"benchmark": "ppo_cartpole", "command": COMMAND}
    report, workdir = compare(args, report, budgets, timeout, warm=True)
    print_run(table(report), facts(report))
    if save(args, report, workdir, DOC_JSON):
        write_doc(report)


if __name__ == "__main__":
    main()
