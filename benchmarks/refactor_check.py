"""Old vs new commit, side by side in one run: CartPole PPO env steps/s and S5 compile seconds.

    .venv/bin/python benchmarks/refactor_check.py --old adcf6dd --new HEAD --pairs 5 \\
        --out docs/benchmarks/refactor_check.json

Each commit is checked out in its own git worktree (in a temporary directory, removed at the
end). Every measurement runs in a fresh process of this interpreter that imports seqrl from one
worktree: ``seqrl``, ``seqrl.agents`` and ``seqrl.envs`` (``agents/`` and ``envs/`` through
pyproject's package-dir, which the editable install maps to the main checkout) are pointed at
the worktree by a finder placed first on ``sys.meta_path``, and the worker checks that every
``seqrl.*`` module it loaded came from that worktree (the paths go into the result).

- ``cartpole``: ``configs/ppo/cartpole.yaml`` at ``--cartpole-steps`` env steps; the summary's
  ``env_steps_per_second`` (compile excluded) and ``compile_seconds``.
- ``s5``: ``configs/ppo/popgym/stateless_cartpole_s5.yaml`` for a few updates; the summary's
  ``compile_seconds``.

Every process gets an empty, private JAX compilation cache (``JAX_COMPILATION_CACHE_DIR`` set
to a new temporary directory, which ``seqrl.runtime.configure_jax`` honours; the worker checks
JAX's setting and that the directory was empty), so every compile is a real one. Progress and
TensorBoard are off, each run writes a fresh run directory. Processes run one at a time,
interleaved pair by pair (the first of each pair alternates: old-new, new-old, ...), so that a
machine shared with other work drifts on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "cartpole": "configs/ppo/cartpole.yaml",
    "s5": "configs/ppo/popgym/stateless_cartpole_s5.yaml",
}
# measurement -> (summary metric compared, higher is better)
METRICS = {"cartpole": ("env_steps_per_second", True), "s5": ("compile_seconds", False)}
S5_STEPS_PER_UPDATE = 32 * 128  # num_envs x ppo.num_steps of the S5 config


# ---------------------------------------------------------------------------------------------
# Worker: one measurement, in its own process, seqrl imported from one worktree
# ---------------------------------------------------------------------------------------------


class TreeFinder:
    """Finds ``seqrl``, ``seqrl.agents`` and ``seqrl.envs`` in one source tree (ahead of the
    editable install's finder, which maps them to the main checkout)."""

    def __init__(self, tree: Path) -> None:
        self.mapping = {
            "seqrl": tree / "seqrl",
            "seqrl.agents": tree / "agents",
            "seqrl.envs": tree / "envs",
        }

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        import importlib.util

        where = self.mapping.get(fullname)
        if where is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, where / "__init__.py", submodule_search_locations=[str(where)]
        )


def loaded_from(tree: Path) -> dict[str, str]:
    """Files of the loaded ``seqrl`` packages; exits if any ``seqrl.*`` module is not in tree."""
    mods = {n: m for n, m in sys.modules.items() if n == "seqrl" or n.startswith("seqrl.")}
    stray = [n for n, m in mods.items() if getattr(m, "__file__", None) and not _inside(m, tree)]
    if stray:
        sys.exit(f"modules imported from outside {tree}: {stray}")
    names = ("seqrl", "seqrl.agents", "seqrl.agents.ppo", "seqrl.envs", "seqrl.loop")
    return {n: mods[n].__file__ for n in names if n in mods}


def _inside(module: Any, tree: Path) -> bool:
    return Path(module.__file__).resolve().is_relative_to(tree.resolve())


def worker(tree: Path, measure: str, steps: int, result: Path) -> None:
    """Trains once and writes the numbers, the module files and the cache facts to result."""
    sys.meta_path.insert(0, TreeFinder(tree))
    cache = Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    cache_before = sorted(os.listdir(cache)) if cache.exists() else []
    import seqrl

    overrides = {"total_timesteps": steps, "loop.tensorboard": False}
    if measure == "s5":
        overrides["loop.num_chunks"] = 2
    run_dir = result.parent / f"run-{result.stem}"  # fresh: the tag is unique
    start = time.perf_counter()
    summary = seqrl.train(
        str(tree / CONFIGS[measure]), run_dir=run_dir, progress=False, overrides=overrides
    ).summary
    wall = time.perf_counter() - start
    import jax

    out = {
        "measure": measure,
        "total_env_steps": summary["total_env_steps"],
        "total_updates": summary["total_updates"],
        "env_steps_per_second": summary["env_steps_per_second"],
        "compile_seconds": summary["compile_seconds"],
        "train_seconds": summary["train_seconds"],
        "train_call_wall_seconds": round(wall, 3),
        "final_return_mean": summary["final_return_mean"],
        "modules": loaded_from(tree),
        "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "cache_entries_before": len(cache_before),
        "cache_entries_after": len(os.listdir(cache)) if cache.exists() else 0,
        "run_dir": str(run_dir),
    }
    if out["jax_compilation_cache_dir"] != str(cache) or cache_before:
        sys.exit(f"compilation cache not private and empty: {out}")
    result.write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def add_worktrees(commits: dict[str, str], base: Path) -> dict[str, Path]:
    trees = {}
    for side, commit in commits.items():
        trees[side] = base / f"wt-{side}"
        git("worktree", "add", "--detach", str(trees[side]), commit)
    return trees


def run_one(tree: Path, measure: str, steps: int, scratch: Path, tag: str) -> dict[str, Any]:
    """One worker process with an empty private compilation cache; its result plus load."""
    cache = scratch / f"cache-{tag}"
    cache.mkdir()
    result = scratch / f"result-{tag}.json"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    env.pop("SEQRL_COMPILE_CACHE", None)
    cmd = [
        sys.executable,
        "-P",
        str(Path(__file__).resolve()),
        "--worker",
        str(tree),
        measure,
        str(steps),
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, str(result)], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"worker {tag} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    out = json.loads(result.read_text())
    out.update(
        process_seconds=round(time.perf_counter() - start, 2),
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )
    return out


def run_pairs(args: argparse.Namespace, trees: dict[str, Path], scratch: Path) -> list[dict]:
    """Pairs of runs, old and new one after the other, the first side alternating."""
    runs = []
    steps = {"cartpole": args.cartpole_steps, "s5": args.s5_updates * S5_STEPS_PER_UPDATE}
    for pair in range(args.pairs):
        order = ("old", "new") if pair % 2 == 0 else ("new", "old")
        for measure in ("cartpole", "s5"):
            for side in order:
                tag = f"{measure}-{pair}-{side}"
                out = run_one(trees[side], measure, steps[measure], scratch, tag)
                out.update(pair=pair, side=side, commit=args.commits[side])
                runs.append(out)
                metric = METRICS[measure][0]
                print(
                    f"[{tag}] {metric}={out[metric]} compile={out['compile_seconds']} "
                    f"load={out['load_before']}->{out['load_after']}",
                    flush=True,
                )
    return runs


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def bootstrap_ratio(log_ratios: list[float]) -> list[float] | None:
    """95% percentile-bootstrap interval of the geometric-mean ratio (>= 4 pairs, else None)."""
    if len(log_ratios) < 4:
        return None
    import numpy as np
    from scipy import stats

    res = stats.bootstrap(
        (np.asarray(log_ratios),),
        np.mean,
        confidence_level=0.95,
        n_resamples=10_000,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    ci = res.confidence_interval
    return [math.exp(ci.low), math.exp(ci.high)]


def compare(runs: list[dict], measure: str, metric: str) -> dict[str, Any]:
    """Medians, per-pair ratios new/old, their bootstrap interval, the spread of old runs."""
    by = {
        side: {r["pair"]: r[metric] for r in runs if r["measure"] == measure and r["side"] == side}
        for side in ("old", "new")
    }
    pairs = sorted(set(by["old"]) & set(by["new"]))
    ratios = [by["new"][p] / by["old"][p] for p in pairs]
    old = list(by["old"].values())
    old_median = statistics.median(old)
    ci = bootstrap_ratio([math.log(r) for r in ratios])
    noise = [min(old) / old_median, max(old) / old_median]  # old-vs-old spread around 1
    median_ratio = statistics.median(ratios)
    return {
        "metric": metric,
        "old": old,
        "new": list(by["new"].values()),
        "old_median": old_median,
        "new_median": statistics.median(by["new"].values()),
        "ratios_new_over_old": ratios,
        "median_ratio": median_ratio,
        "ratio_range": [min(ratios), max(ratios)],
        "geomean_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)),
        "bootstrap95_geomean_ratio": ci,
        "old_spread_over_median": noise,
        "ratio_interval_contains_1": (ci or [min(ratios), max(ratios)])[0]
        <= 1.0
        <= (ci or [min(ratios), max(ratios)])[1],
        "median_ratio_within_old_spread": noise[0] <= median_ratio <= noise[1],
    }


def verdict(c: dict[str, Any], higher_is_better: bool) -> str:
    """ "within noise" when the ratio interval contains 1 or the median ratio lies within the old
    runs' spread; says so when only one of the two holds, and which side leans faster."""
    lo, hi = c["bootstrap95_geomean_ratio"] or c["ratio_range"]
    faster = (c["median_ratio"] > 1) == higher_is_better
    lean = f"{'new' if faster else 'old'} faster by {abs(c['median_ratio'] - 1) * 100:.0f}%"
    inside, spread = c["ratio_interval_contains_1"], c["median_ratio_within_old_spread"]
    if inside and spread:
        return "within noise"
    if spread:
        return (
            f"within noise (median ratio inside the old runs' spread; but the interval "
            f"{lo:.3f}-{hi:.3f} excludes 1: {lean} at the median)"
        )
    if inside:
        return f"within noise (interval {lo:.3f}-{hi:.3f} contains 1; median ratio: {lean})"
    return f"{lean} (median ratio; interval {lo:.3f}-{hi:.3f}, outside the old runs' spread)"


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def lscpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    lines = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if "Model name" in ln]
    return lines[0] if lines else platform.processor()


def fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| measurement | old median | new median | ratios new/old (per pair) | median ratio "
        "| min-max ratio | 95% bootstrap (geo. mean) | old runs / old median | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for measure, c in report["comparisons"].items():
        ci = c["bootstrap95_geomean_ratio"]
        ratios = ", ".join(f"{r:.3f}" for r in c["ratios_new_over_old"])
        lines.append(
            f"| {measure} {c['metric']} | {fmt(c['old_median'])} | {fmt(c['new_median'])} "
            f"| {ratios} | {c['median_ratio']:.3f} "
            f"| {c['ratio_range'][0]:.3f}-{c['ratio_range'][1]:.3f} "
            f"| {f'{ci[0]:.3f}-{ci[1]:.3f}' if ci else 'n/a'} "
            f"| {c['old_spread_over_median'][0]:.3f}-{c['old_spread_over_median'][1]:.3f} "
            f"| {c['verdict']} |"
        )
    return lines


def verdict_line(measure: str, c: dict[str, Any]) -> str:
    lo, hi = c["bootstrap95_geomean_ratio"] or c["ratio_range"]
    a, b = c["old_spread_over_median"]
    return (
        f"- {measure} {c['metric']}: **{c['verdict']}** (geometric-mean ratio new/old "
        f"{c['geomean_ratio']:.3f}, interval {lo:.3f}-{hi:.3f}; the old runs alone span "
        f"{a:.3f}-{b:.3f} of their median)."
    )


def section(report: dict[str, Any]) -> str:
    """The docs/benchmarks.md section for this report."""
    m, cfg, runs = report["machine"], report["settings"], report["runs"]
    compile_cp = [r["compile_seconds"] for r in runs if r["measure"] == "cartpole"]
    head = [
        "## Old vs new commit: CartPole PPO steps/s and S5 compile (issue 17 refactor)",
        "",
        f"Command: `{report['command']}` ({report['date']}; {m['cpu']}, {m['cores']} cores, "
        f"shared; load average {min(r['load_before'] for r in runs):.2f}-"
        f"{max(r['load_before'] for r in runs):.2f} before the runs). "
        f"Old: `{report['commits']['old']}`, new: `{report['commits']['new']}`, each in its own "
        "git worktree, imported by the same interpreter (`.venv`); every run records the files "
        "of `seqrl`, `seqrl.agents`, `seqrl.envs` it imported, all inside its worktree. "
        f"Raw numbers: `{report['out']}`.",
        "",
        f"{cfg['pairs']} pairs, one process per run, one at a time, old and new interleaved "
        "(the first of each pair alternating). CartPole: `configs/ppo/cartpole.yaml` at "
        f"{cfg['cartpole_steps']:,} env steps (env steps/s inside the jitted chunks, compile "
        f"excluded). S5: `configs/ppo/popgym/stateless_cartpole_s5.yaml` for "
        f"{cfg['s5_updates']} updates (`loop.num_chunks=2`), `compile_seconds` of the summary. "
        "Progress and TensorBoard off, a fresh run directory per run. Compilation cache: empty "
        "and private for every process, CartPole runs included (`JAX_COMPILATION_CACHE_DIR` a "
        "new temporary directory, checked empty and in effect), so every compile is cold "
        f"(CartPole compile seconds: {min(compile_cp):.1f}-{max(compile_cp):.1f}).",
        "",
    ]
    verdicts = [verdict_line(k, c) for k, c in report["comparisons"].items()]
    rule = (
        "Within noise means: the 95% bootstrap interval of the pairs' geometric-mean ratio "
        "(min-max of the ratios below 4 pairs) contains 1, or the median ratio lies within "
        "the spread of the old runs around their median."
    )
    return "\n".join([*head, *table(report), "", rule, "", *verdicts]) + "\n"


def build_report(
    args: argparse.Namespace, runs: list[dict], started: str, command: str
) -> dict[str, Any]:
    comparisons = {}
    for measure, (metric, higher) in METRICS.items():
        c = compare(runs, measure, metric)
        c["verdict"] = verdict(c, higher)
        comparisons[measure] = c
    extra = compare(runs, "cartpole", "compile_seconds")
    extra["verdict"] = verdict(extra, higher_is_better=False)
    comparisons["cartpole_compile"] = extra
    return {
        "command": command,
        "date": started,
        "machine": {"cpu": lscpu_model(), "cores": os.cpu_count(), "python": sys.version},
        "commits": args.commits,
        "settings": {
            "pairs": args.pairs,
            "cartpole_steps": args.cartpole_steps,
            "s5_updates": args.s5_updates,
            "compile_cache": "empty private JAX_COMPILATION_CACHE_DIR per process",
        },
        "out": args.out,
        "comparisons": comparisons,
        "runs": runs,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="adcf6dd", help="commit before the change")
    p.add_argument("--new", default="HEAD", help="commit after the change")
    p.add_argument("--pairs", type=int, default=5, help="old/new pairs per measurement")
    p.add_argument("--out", default="docs/benchmarks/refactor_check.json", help="JSON report")
    p.add_argument("--section", default=None, help="also write the markdown section here")
    p.add_argument("--cartpole-steps", type=int, default=3_072_000, help="CartPole env steps")
    p.add_argument("--s5-updates", type=int, default=4, help="S5 PPO updates")
    p.add_argument(
        "--rebuild", action="store_true", help="no runs: rebuild --out and the section from --out"
    )
    p.add_argument("--worker", nargs=4, metavar=("TREE", "MEASURE", "STEPS", "RESULT"))
    return p.parse_args(argv)


def measure_all(args: argparse.Namespace) -> tuple[list[dict], str]:
    """All the runs, in worktrees made (and removed) here; the runs and the start time."""
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="refactor-check-") as tmp:
        trees = add_worktrees(args.commits, Path(tmp))
        try:
            runs = run_pairs(args, trees, Path(tmp))
        finally:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
    return runs, started


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        tree, measure, steps, result = args.worker
        worker(Path(tree), measure, int(steps), Path(result))
        return
    out = ROOT / args.out
    if args.rebuild:  # the same runs, the statistics and the text again
        saved = json.loads(out.read_text())
        args.commits, runs, started = saved["commits"], saved["runs"], saved["date"]
        vars(args).update(saved["settings"])
        command = saved["command"]
    else:
        args.commits = {"old": git("rev-parse", args.old), "new": git("rev-parse", args.new)}
        runs, started = measure_all(args)
        command = " ".join([".venv/bin/python benchmarks/refactor_check.py", *sys.argv[1:]])
    report = build_report(args, runs, started, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    text = section(report)
    if args.section:
        Path(args.section).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
