"""Decision Transformer training throughput: seqrl vs PyTorch, on the same data, in one invocation.

    .venv/bin/python -m benchmarks.dt_throughput           # full run: writes docs/benchmarks*
    .venv/bin/python -m benchmarks.dt_throughput --quick   # smoke test of the plumbing (~1 min)

The DT gym configuration (Chen et al.): K 20, batch 64, 128 dims, 3 layers, 1 head, dropout 0.1,
AdamW lr 1e-4 (linear warm-up) with weight decay 1e-4, gradient norm clipped to 0.25. A
synthetic HalfCheetah-shaped dataset (observations of 17 floats, actions of 6 floats in [-1, 1]
and, for the discrete runs, one of 18 actions) is generated once with seeded numpy, saved as an
``.npz`` and loaded by every worker. The workers run one after another, each in its own process:

- seqrl (this repo's ``.venv``; :mod:`benchmarks.peer_seqrl_dt`): ``seqrl.agents.dt`` in jitted
  chunks of updates (``seqrl.loop.make_chunk``) with the window sampling on device; compile
  timed ahead of time, then only the chunks;
- PyTorch (``.venv-sb3``, torch 2.13.0 CPU; :mod:`benchmarks.peer_torch_dt`): a DT of the same
  architecture written for this benchmark, a standard training loop, batches drawn with numpy
  like the official DT's ``get_batch``, ``torch.set_num_threads(1)``.

Throughput is samples/s: windows of K steps trained per second. Both models must have the same
parameter count (checked). Besides the headline pair per action head, two side runs show
where the ratio comes from: PyTorch with 2 threads, and seqrl pinned to one core.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    ROOT,
    bench_workdir,
    load_average,
    observed_and_notes,
    print_run,
    ratio_table,
    run_header,
    run_process,
    save_report,
    versions_text,
)
from benchmarks.ppo_cartpole import ensure_venv, write_doc

DOC_JSON = ROOT / "docs" / "benchmarks" / "dt_throughput.json"
SECTION = "## Decision Transformer training throughput: seqrl vs PyTorch"
COMMAND = ".venv/bin/python -m benchmarks.dt_throughput"
NOTES_START = "<!-- dt_throughput:notes:start -->"
NOTES_END = "<!-- dt_throughput:notes:end -->"
TARGET = 2.0  # seqrl / PyTorch samples/s
OUTPUT_TOLERANCE = 1e-4  # PyTorch with seqrl's parameters: largest |output difference|

# The dataset: HalfCheetah-shaped (D4RL's halfcheetah: 17 observation floats, 6 actions).
NUM_TRAJECTORIES = 200
MAX_LENGTH = 1000
MIN_LENGTH = 100
OBS_DIM = 17
ACT_DIM = 6
NUM_ACTIONS = 18  # discrete runs: Atari's full action set

# name -> (peer, head, options); the two side runs come last
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "seqrl-continuous": ("seqrl", "deterministic", {}),
    "torch-continuous": ("torch", "deterministic", {"threads": 1}),
    "seqrl-discrete": ("seqrl", "categorical", {}),
    "torch-discrete": ("torch", "categorical", {"threads": 1}),
    "torch-continuous-2threads": ("torch", "deterministic", {"threads": 2}),
    "seqrl-continuous-1core": ("seqrl", "deterministic", {"cpus": {0}}),
}
QUICK_RUNS = ("seqrl-continuous", "torch-continuous")
LABELS = {
    "seqrl-continuous": "seqrl, continuous (tanh, MSE)",
    "torch-continuous": "PyTorch, continuous (tanh, MSE)",
    "seqrl-discrete": f"seqrl, discrete ({NUM_ACTIONS} actions, cross entropy)",
    "torch-discrete": f"PyTorch, discrete ({NUM_ACTIONS} actions, cross entropy)",
    "torch-continuous-2threads": "side run: PyTorch continuous, 2 threads",
    "seqrl-continuous-1core": "side run: seqrl continuous, pinned to 1 core",
}
# (name, numerator run, denominator run, target or None)
RATIOS = (
    ("seqrl / PyTorch, continuous", "seqrl-continuous", "torch-continuous", TARGET),
    ("seqrl / PyTorch, discrete", "seqrl-discrete", "torch-discrete", TARGET),
    ("PyTorch 2 threads / 1 thread", "torch-continuous-2threads", "torch-continuous", None),
    (
        "seqrl / PyTorch 2 threads, continuous",
        "seqrl-continuous",
        "torch-continuous-2threads",
        None,
    ),
    ("seqrl 1 core / PyTorch 1 thread", "seqrl-continuous-1core", "torch-continuous", None),
)
# work per run: seqrl chunks x updates per chunk; PyTorch timed updates (+ untimed warm-up)
FULL_WORK = {"seqrl": {"chunks": 4, "chunk_updates": 100}, "torch": {"updates": 300}}
QUICK_WORK = {"seqrl": {"chunks": 2, "chunk_updates": 5}, "torch": {"updates": 15}}
TORCH_WARMUP_UPDATES = 10


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


def make_dataset(path: Path, seed: int = 0) -> dict[str, Any]:
    """Writes the synthetic dataset to ``path``; returns its description.

    Padded arrays (``obs [N, L, 17]``, ``actions [N, L, 6]`` in [-1, 1], ``actions_discrete
    [N, L]``, ``rewards [N, L]``, ``lengths [N]``), zero past each trajectory's end. States
    follow a stable linear system with noise, actions are a noisy tanh-linear policy of the
    state (so there is something to fit), rewards reward one "velocity" coordinate and
    penalize the action, HalfCheetah-style. Throughput does not depend on the values.
    """
    rng = np.random.default_rng(seed)
    n, steps = NUM_TRAJECTORIES, MAX_LENGTH
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, n).astype(np.int32)
    dynamics = 0.95 * np.linalg.qr(rng.normal(size=(OBS_DIM, OBS_DIM)))[0]
    policy = rng.normal(size=(OBS_DIM, ACT_DIM)) / np.sqrt(OBS_DIM)
    effect = rng.normal(size=(ACT_DIM, OBS_DIM)) * 0.1
    logits_w = rng.normal(size=(OBS_DIM, NUM_ACTIONS))
    obs = np.zeros((n, steps, OBS_DIM), np.float32)
    actions = np.zeros((n, steps, ACT_DIM), np.float32)
    x = rng.normal(size=(n, OBS_DIM))
    for t in range(steps):
        a = np.tanh(x @ policy + 0.3 * rng.normal(size=(n, ACT_DIM)))
        obs[:, t], actions[:, t] = x, a
        x = x @ dynamics + a @ effect + 0.1 * rng.normal(size=(n, OBS_DIM))
    rewards = obs[..., 8] - 0.1 * np.sum(actions**2, axis=-1)
    actions_discrete = np.argmax(obs @ logits_w, axis=-1).astype(np.int32)
    valid = np.arange(steps)[None, :] < lengths[:, None]
    np.savez(
        path,
        obs=obs * valid[..., None],
        actions=actions * valid[..., None],
        actions_discrete=actions_discrete * valid,
        rewards=(rewards * valid).astype(np.float32),
        lengths=lengths,
        num_actions=np.int32(NUM_ACTIONS),
    )
    return {
        "trajectories": n,
        "max_length": steps,
        "lengths": f"uniform {MIN_LENGTH}..{MAX_LENGTH}",
        "total_steps": int(lengths.sum()),
        "obs_dim": OBS_DIM,
        "action_dim": ACT_DIM,
        "num_actions_discrete": NUM_ACTIONS,
        "seed": seed,
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


# ---------------------------------------------------------------------------------------------
# Running the workers
# ---------------------------------------------------------------------------------------------


def worker_command(name: str, python: Path, data: Path, out: Path, quick: bool) -> list[str]:
    peer, head, options = RUNS[name]
    work = (QUICK_WORK if quick else FULL_WORK)[peer]
    cmd = [str(python), "-m", f"benchmarks.peer_{peer}_dt", "--data", str(data), "--head", head]
    # the headline seqrl run exports its initial model; the PyTorch run checks it against it
    reference = data.with_name(f"reference-{head}.npz")
    if peer == "seqrl":
        cmd += ["--chunks", str(work["chunks"]), "--chunk-updates", str(work["chunk_updates"])]
        cmd += [] if options else ["--export", str(reference)]
    else:
        cmd += ["--updates", str(work["updates"]), "--threads", str(options["threads"])]
        cmd += ["--warmup-updates", str(TORCH_WARMUP_UPDATES)]
        cmd += ["--check", str(reference)] if options["threads"] == 1 else []
    return cmd + ["--out", str(out)]


def run_worker(name: str, cmd: list[str], workdir: Path, timeout: float) -> dict[str, Any]:
    """Runs one worker to the end; its result plus the process's wall time, peak RSS, load."""
    out = Path(cmd[-1])
    log = workdir / f"{name}.log"
    cpus = RUNS[name][2].get("cpus")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    result, _ = run_process(name, cmd, out, log, timeout, preexec_fn=pin)  # compiles cold
    result["cpus"] = sorted(cpus) if cpus else "all"
    result["command"] = " ".join(Path(c).name if c.startswith("/") else c for c in cmd)
    print(f"[run] {name}: {result['samples_per_second']:,.0f} samples/s", flush=True)
    return result


def ratios(results: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for label, num, den, target in RATIOS:
        if num not in results or den not in results:
            continue
        value = results[num]["samples_per_second"] / results[den]["samples_per_second"]
        met = None if target is None else value >= target
        rows.append({"name": label, "value": round(value, 3), "target": target, "met": met})
    return rows


def check_models(results: dict[str, dict]) -> list[str]:
    """Where seqrl's and PyTorch's models differ, per head (empty: nowhere): parameter counts,
    and PyTorch's outputs with seqrl's parameters on seqrl's batch."""
    problems = []
    for head in ("continuous", "discrete"):
        a, b = results.get(f"seqrl-{head}"), results.get(f"torch-{head}")
        if not (a and b):
            continue
        if a["param_count"] != b["param_count"]:
            problems.append(f"{head}: seqrl {a['param_count']:,} vs PyTorch {b['param_count']:,}")
        diff = b.get("max_abs_diff_vs_seqrl")
        if diff is None or diff > OUTPUT_TOLERANCE:
            problems.append(f"{head}: outputs differ from seqrl's by {diff}")
    return problems


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def gflops(results: dict[str, dict], name: str) -> float | None:
    """Achieved GFLOP/s of a run: updates/s x XLA's count of one update's FLOPs (the same
    network and batch on both sides, so seqrl's count serves PyTorch's runs too)."""
    head = "discrete" if RUNS[name][1] == "categorical" else "continuous"
    seqrl_run = results.get(f"seqrl-{head}")
    if not seqrl_run:
        return None
    r = results[name]
    updates_per_second = r["samples_per_second"] / (r["samples"] / r["updates"])
    return updates_per_second * seqrl_run["flops_per_update"] / 1e9


def table(report: dict) -> str:
    lines = [
        "| run | samples/s | GFLOP/s | compile s | parameters | peak RSS MB | load before/after |",
        "|---|---|---|---|---|---|---|",
    ]
    results = report["results"]
    for name, r in results.items():
        compile_s = f"{r['compile_seconds']:.1f}" if "compile_seconds" in r else "none"
        load = f"{r['load_before'][0]} / {r['load_after'][0]}"
        rate = gflops(results, name)
        lines.append(
            f"| {LABELS[name]} | {r['samples_per_second']:,.0f} | "
            f"{'' if rate is None else f'{rate:.0f}'} | {compile_s} | "
            f"{r['param_count']:,} | {r['process_peak_rss_mb']:,.0f} | {load} |"
        )
    lines += ["", *ratio_table(report["ratios"], "ratio of samples/s")]
    return "\n".join(lines)


def facts(report: dict) -> list[str]:
    """Observations computed from this run, for the console and the doc."""
    results, out = report["results"], []
    for head in ("continuous", "discrete"):
        torch_r = results.get(f"torch-{head}")
        if torch_r:
            share = torch_r["sample_seconds"] / torch_r["train_seconds"]
            out.append(
                f"PyTorch {head}: drawing batches with numpy took {share:.0%} of its training "
                f"time; without it, {torch_r['samples_per_second_without_sampling']:,.0f} "
                "samples/s."
            )
        seqrl_r = results.get(f"seqrl-{head}")
        if seqrl_r:
            chunks = ", ".join(f"{s:.1f}" for s in seqrl_r["chunk_seconds"])
            worth = seqrl_r["compile_seconds"] * seqrl_r["samples_per_second"]
            out.append(
                f"seqrl {head}: compile {seqrl_r['compile_seconds']:.1f} s (init "
                f"{seqrl_r['compile_init_seconds']:.1f} s, chunk of {seqrl_r['chunk_updates']} "
                f"updates {seqrl_r['compile_chunk_seconds']:.1f} s); chunk times {chunks} s; "
                f"the compile costs as much time as {worth:,.0f} samples of training."
            )
    if report["model_mismatch"]:
        out.append("MODELS DIFFER: " + "; ".join(report["model_mismatch"]))
    else:
        diffs = ", ".join(
            f"{results[f'torch-{h}']['max_abs_diff_vs_seqrl']:.1e} ({h})"
            for h in ("continuous", "discrete")
            if f"torch-{h}" in results
        )
        out.append(
            "Same model on both sides: equal parameter counts, and the PyTorch model loaded "
            "with seqrl's initial parameters reproduces seqrl's outputs on one of its training "
            f"batches (dropout off) to within {diffs}, the largest absolute difference."
        )
    if report["quick"]:
        out.append("Quick mode: a few updates to test the plumbing; these numbers mean nothing.")
    missed = [r["name"] for r in report["ratios"] if r["met"] is False]
    out.append("Target missed: " + ", ".join(missed) + "." if missed else "Target met.")
    return out


def markdown(report: dict, notes: str) -> str:
    m, results = report["machine"], report["results"]
    cont = results["seqrl-continuous"]["param_breakdown"]
    versions = versions_text(
        {p: results[f"{p}-continuous"]["versions"] for p in ("seqrl", "torch")}
    )
    torch_threads = results["torch-continuous"]["threads"]
    d = report["dataset"]
    return f"""{SECTION}

Command: `{COMMAND}` (`--quick`: a ~1 minute smoke test that writes no docs). Measured
{report["date"]} (seqrl at {report["seqrl_revision"]}) on {m["nproc"]} cores
({m["cpu"] or "unknown CPU"}, {m["memory_gb"]} GB RAM), no GPU. Load average (1 min):
{report["load_before"][0]} before the run, {report["load_after"][0]} after it; per run in the
table. Workers run one after another, each in its own process; the machine is shared, so compare
ratios from one run, not absolute numbers across runs. Raw numbers:
`docs/benchmarks/dt_throughput.json`.

Both train the DT gym configuration (Chen et al.): K 20, batch 64, 128 dims, 3 layers, 1 head,
dropout 0.1, AdamW lr 1e-4 (10k-update linear warm-up) with weight decay 1e-4, gradient norm
clipped to 0.25, on the same synthetic HalfCheetah-shaped dataset ({d["trajectories"]}
trajectories, lengths {d["lengths"]}, {d["total_steps"]:,} steps; {d["obs_dim"]} observation
floats, {d["action_dim"]} actions in [-1, 1], or {d["num_actions_discrete"]} discrete actions),
generated once with seeded numpy and loaded by both. *samples/s* = windows of K = 20 steps
(60 tokens) trained per second, compile excluded.

{table(report)}

What each side runs:
- **seqrl**: `seqrl.agents.dt.make_trainer` (the continuous head is `deterministic`: tanh, MSE;
  the discrete one `categorical`) trained as `seqrl.loop` trains: `make_chunk` runs
  {results["seqrl-continuous"]["chunk_updates"]} updates in one jitted `lax.scan` with the
  window sampling on device, {results["seqrl-continuous"]["chunks"]} chunks timed, one seed.
  *compile s*: `init` and the chunk, compiled ahead of time and cold (no persistent cache).
- **PyTorch** {results["torch-continuous"]["versions"]["torch"]}
  (`benchmarks/peer_torch_dt.py`): the same network written in PyTorch (GPT-2-style pre-LN
  blocks, `scaled_dot_product_attention` with a causal + padding mask, token embeddings for
  R^, s, a plus a timestep embedding, LayerNorm, tanh action head), `torch.optim.AdamW`, a
  `LambdaLR` warm-up, `clip_grad_norm_`; batches drawn on the host with numpy like the official
  DT's `get_batch` (trajectories in proportion to length, random start, left padding, masks),
  with states normalized and returns-to-go computed once up front; {TORCH_WARMUP_UPDATES}
  untimed updates, then {results["torch-continuous"]["updates"]} timed.
- Parameters: {results["seqrl-continuous"]["param_count"]:,} (continuous) and
  {results["seqrl-discrete"]["param_count"]:,} (discrete) on both sides, checked equal by the
  script. Of them, the timestep embedding (1000 x 128) holds {cont["embed_timestep"]:,} and the
  three blocks {sum(v for k, v in cont.items() if k.startswith("block_")):,}.
- Threads: XLA_FLAGS {report["threads"]["XLA_FLAGS"]}, i.e. XLA's CPU thread pool over all
  {m["nproc"]} cores; torch intra-op threads {torch_threads["torch_intra_op_threads"]} (inter-op
  {torch_threads["torch_inter_op_threads"]}). The side runs give PyTorch 2 threads and pin
  seqrl to one core (`sched_setaffinity`), to show how much of the ratio is the second core.
- *GFLOP/s*: updates/s x the FLOPs of one update as XLA's cost analysis counts them
  ({results["seqrl-continuous"]["flops_per_update"] / 1e9:.2f} G continuous,
  {results["seqrl-discrete"]["flops_per_update"] / 1e9:.2f} G discrete; the same count serves
  PyTorch's runs: same network, same batch shapes).
- *peak RSS*: `ru_maxrss` of the worker's process.
- Versions: {versions}.

{observed_and_notes(facts(report), (NOTES_START, NOTES_END), notes)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few updates: a smoke test")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per worker")
    parser.add_argument("--json", type=Path, help="also write the report here (any mode)")
    args = parser.parse_args()
    names = QUICK_RUNS if args.quick else tuple(RUNS)
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    workdir = bench_workdir("dt_throughput", args.quick)

    # SETUP the PyTorch venv and the dataset before any timing starts
    pythons = {"seqrl": Path(sys.executable), "torch": ensure_venv("sb3", workdir)}
    data = workdir / "dataset.npz"
    dataset = make_dataset(data)
    print(f"[setup] dataset: {data} ({dataset['total_steps']:,} steps)", flush=True)

    # RUN the workers one after another
    report: dict[str, Any] = {
        "benchmark": "dt_throughput",
        **run_header(COMMAND, args.quick),
        "dataset": dataset,
        "load_before": load_average(),
    }
    results = {}
    for name in names:
        peer = RUNS[name][0]
        cmd = worker_command(name, pythons[peer], data, workdir / f"{name}.json", args.quick)
        results[name] = run_worker(name, cmd, workdir, timeout)
    report["load_after"] = load_average()
    report["threads"] = {
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "unset (XLA's default)"),
        **results["torch-continuous"]["threads"],
    }
    report["model_mismatch"] = check_models(results)
    report["ratios"] = ratios(results)
    report["results"] = results

    print_run(table(report), facts(report))

    save_report(report, workdir / "dt_throughput.json" if args.quick else DOC_JSON, args.json)
    if not args.quick:
        write_doc(report, SECTION, (NOTES_START, NOTES_END), markdown)


if __name__ == "__main__":
    main()
