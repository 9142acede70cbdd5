"""The benchmark suite, one command: ``python -m benchmarks run [SUITE ...] [--quick]``
(``make bench`` / ``make bench-quick``).

Runs each suite's own script (one after another, each in fresh processes) and writes, per suite,
``<suite>.json`` (the raw report: machine, versions, date, load, every number), ``<suite>.md``
(its table) and ``<suite>.png`` (a figure whose right panel is a ratio against a peer measured
in the same run). A full run writes them into ``docs/benchmarks/`` and regenerates each suite's
section of ``docs/benchmarks.md`` plus the index at its top; ``--quick`` (smoke-test budgets,
meaningless numbers) writes into ``runs/bench/quick-<time>/`` and leaves the docs alone.

Suites (default: all of them except ``meta_point``):

- ``ppo_cartpole``: seqrl PPO vs rejax vs Stable-Baselines3 on CartPole-v1 (peers in their own
  venvs, created on first use from ``benchmarks/requirements-*.txt``);
- ``ppo_brax``: the same three on one continuous-control task, brax inverted_pendulum (SB3 on
  MuJoCo's InvertedPendulum-v5: it has no brax backend);
- ``backbones``: PPO with MLP/GRU/LSTM/S5/S4D torsos by rollout length;
- ``dt_throughput``: Decision Transformer training, seqrl vs a PyTorch DT;
- ``fourier_toy``: the Fourier head vs a linear head on a toy density;
- ``num_envs``: seqrl PPO throughput by number of envs;
- ``devices``: seqrl PPO by number of devices (env batch sharded; forced host devices on a
  machine with one);
- ``meta_point`` (only when named; ~50 minutes): the offline meta-RL pipeline of docs/results.md.

Nothing here is specific to CPU: on a GPU machine the same command measures the GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import ROOT, find_section, load_average, machine, seqrl_revision

DOC = ROOT / "docs" / "benchmarks.md"
DOCS = ROOT / "docs" / "benchmarks"
INDEX = "## The suite: `make bench`"

# suite -> (module, its arguments)
SUITES = {
    "ppo_cartpole": ("benchmarks.ppo_cartpole", []),
    "ppo_brax": ("benchmarks.ppo_brax", []),
    "backbones": ("benchmarks.backbones", []),
    "dt_throughput": ("benchmarks.dt_throughput", []),
    "fourier_toy": ("benchmarks.fourier_toy", []),
    "num_envs": ("benchmarks.scaling", ["num_envs"]),
    "devices": ("benchmarks.scaling", ["devices"]),
}
DEFAULT = tuple(SUITES)


def section_heading(suite: str) -> str:
    from benchmarks import backbones, dt_throughput, fourier_toy, ppo_brax, ppo_cartpole, scaling

    if suite in scaling.SECTIONS:
        return scaling.SECTIONS[suite]
    return {
        "ppo_cartpole": ppo_cartpole,
        "ppo_brax": ppo_brax,
        "backbones": backbones,
        "dt_throughput": dt_throughput,
        "fourier_toy": fourier_toy,
    }[suite].SECTION


def render(suite: str, report: dict) -> str:
    """The suite's Markdown section, from its JSON report (a quick run's report may lack what
    a suite's full section shows: then its ratio table alone)."""
    try:
        return _render(suite, report)
    except (KeyError, TypeError, ValueError):
        from benchmarks.common import ratio_table

        return "\n".join(
            [
                f"{section_heading(suite)} ({'quick' if report.get('quick') else 'partial'})",
                "",
                f"Measured {report.get('date', '?')}; raw numbers in `{suite}.json`.",
                "",
                *ratio_table(report.get("ratios", [])),
                "",
            ]
        )


def _render(suite: str, report: dict) -> str:
    from benchmarks import backbones, dt_throughput, fourier_toy, ppo_brax, ppo_cartpole, scaling

    if suite in ("num_envs", "devices"):
        return scaling.markdown(report)
    if suite == "ppo_cartpole":
        return ppo_cartpole.markdown(report, "")
    if suite == "ppo_brax":
        return ppo_brax.markdown(report, "")
    if suite == "dt_throughput":
        return dt_throughput.markdown(report, "")
    return {"backbones": backbones, "fourier_toy": fourier_toy}[suite].markdown(report)


def doc_section(heading: str) -> str:
    """The section of docs/benchmarks.md under ``heading`` (as the suite's script wrote it)."""
    text = DOC.read_text()
    span = find_section(text, heading)
    return "" if span is None else text[span[0] : span[1]].rstrip() + "\n"


def run_suite(suite: str, quick: bool, out: Path) -> dict:
    module, args = SUITES[suite]
    json_path = out / f"{suite}.json"
    cmd = [sys.executable, "-m", module, *args, "--json", str(json_path)]
    if quick:
        cmd.append("--quick")
    print(f"\n=== {suite}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not json_path.exists():
        return {"suite": suite, "seconds": round(seconds, 1), "failed": done.returncode}
    report = json.loads(json_path.read_text())
    # full runs: the section the script wrote into docs/benchmarks.md (hand-written notes kept)
    markdown = (not quick and doc_section(section_heading(suite))) or render(suite, report)
    (out / f"{suite}.md").write_text(markdown)
    from benchmarks.plots import plot

    plot(suite, report, out / f"{suite}.png")
    print(f"=== {suite}: {seconds:.0f} s -> {out / suite}.json/.md/.png", flush=True)
    return summarize(suite, report, seconds)


def summarize(suite: str, report: dict, seconds: float | None) -> dict:
    return {
        "suite": suite,
        "seconds": None if seconds is None else round(seconds, 1),
        "date": report.get("date", "?"),
        "ratios": report.get("ratios", []),
    }


def render_recorded(out: Path) -> list[dict]:
    """Regenerates every suite's .md and .png (and the index) from the recorded JSON files,
    measuring nothing."""
    from benchmarks.plots import plot

    done = []
    for suite in DEFAULT:
        path = out / f"{suite}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        markdown = doc_section(section_heading(suite)) or render(suite, report)
        (out / f"{suite}.md").write_text(markdown)
        plot(suite, report, out / f"{suite}.png")
        done.append(summarize(suite, report, None))
    return done


def headline(ratios: list[dict]) -> str:
    shown = [r for r in ratios if r.get("value") is not None][:3]
    return "; ".join(f"{r['name']}: {r['value']:.2f}" for r in shown) or "see table"


def index_table(suites: list[dict]) -> list[str]:
    lines = [
        "| suite | measured | minutes | ratios against the peer measured in the same run | files |",
        "|---|---|---|---|---|",
    ]
    for s in suites:
        name = s["suite"]
        files = f"[json](benchmarks/{name}.json), [md](benchmarks/{name}.md), " + (
            f"[png](benchmarks/{name}.png)"
        )
        status = "FAILED" if s.get("failed") is not None else headline(s["ratios"])
        minutes = "" if s.get("seconds") is None else f"{s['seconds'] / 60:.1f}"
        lines.append(f"| {name} | {s.get('date', '')} | {minutes} | {status} | {files} |")
    return [
        *lines,
        "",
        "Not in the default suite: `meta_point` (the offline meta-RL pipeline of "
        "docs/results.md, ~50 minutes; `python -m benchmarks run meta_point` or "
        "`make meta-point`).",
        "",
    ]


def index(summary: dict) -> str:
    m = summary["machine"]
    intro = (
        f"`{summary['command']}` regenerated the sections below on {summary['date']} "
        f"(seqrl {summary['seqrl_revision']}) in {summary['seconds'] / 60:.1f} minutes on "
        f"{m['nproc']} cores ({m['cpu'] or 'unknown CPU'}, {m['memory_gb']} GB RAM, "
        f"{m['platform']}); load average {summary['load_before'][0]} before, "
        f"{summary['load_after'][0]} after (the machine is shared: compare ratios from one run, "
        "not absolute numbers across runs). "
    )
    return "\n".join([INDEX, "", intro + FILES, "", *index_table(summary["suites"])])


FILES = (
    "`make bench-quick` (`--quick`) runs the same suites with smoke-test budgets into "
    "`runs/bench/` in a few minutes. Per suite: `docs/benchmarks/<suite>.json` (raw numbers, "
    "machine, versions, date), `.md` (the table) and `.png` (the figure, with its ratio against a "
    "peer from the same run)."
)


def render_index(suites: list[dict]) -> str:
    m = machine()
    intro = (
        "`make bench` (`python -m benchmarks run`) runs every suite below and regenerates its "
        "files here and its section of this page. This index was regenerated from the recorded "
        "JSON files (`python -m benchmarks render`, which measures nothing): each suite was "
        f"measured on its own date, on {m['nproc']} cores ({m['cpu'] or 'unknown CPU'}), no GPU. "
    )
    return "\n".join([INDEX, "", intro + FILES, "", *index_table(suites)])


def write_index(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    span = find_section(text, INDEX)
    if span:
        text = text[: span[0]] + section + text[span[1] :]
    else:
        first = text.find("\n## ")
        head, rest = (text, "") if first < 0 else (text[: first + 1], text[first + 1 :])
        text = head.rstrip("\n") + "\n\n" + section + "\n" + rest
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run suites (default: all but meta_point)")
    p.add_argument("suites", nargs="*", metavar="SUITE", help=", ".join([*SUITES, "meta_point"]))
    p.add_argument("--quick", action="store_true", help="smoke-test budgets, into runs/bench/")
    sub.add_parser(
        "render",
        help="regenerate docs/benchmarks/*.md, *.png and the index from the recorded JSON",
    )
    args = parser.parse_args(argv)
    if args.command == "render":
        write_index(render_index(render_recorded(DOCS)))
        return 0
    suites = args.suites or list(DEFAULT)
    unknown = [s for s in suites if s not in SUITES and s != "meta_point"]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}; allowed: {', '.join([*SUITES, 'meta_point'])}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "runs" / "bench" / f"quick-{stamp}" if args.quick else DOCS
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks run" + "".join(f" {s}" for s in args.suites)
    summary = {
        "command": command + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seqrl_revision": seqrl_revision(),
        "machine": machine(),
        "load_before": load_average(),
        "suites": [],
    }
    start = time.perf_counter()
    for suite in suites:
        if suite == "meta_point":
            cmd = [sys.executable, "-m", "benchmarks.meta_point"] + (["--quick"] * args.quick)
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT)
            result = {"suite": suite, "seconds": round(time.perf_counter() - t0, 1), "ratios": []}
            if done.returncode != 0:
                result["failed"] = done.returncode
            summary["suites"].append(result)
            continue
        summary["suites"].append(run_suite(suite, args.quick, out))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["load_after"] = load_average()
    (out / "suite.json").write_text(json.dumps(summary, indent=1) + "\n")
    section = index(summary)
    if args.quick:
        (out / "index.md").write_text(section)
    elif set(suites) >= set(DEFAULT):  # a partial run leaves the index of the last full one
        write_index(section)
    print(f"\n{section}")
    failed = [s["suite"] for s in summary["suites"] if s.get("failed") is not None]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
