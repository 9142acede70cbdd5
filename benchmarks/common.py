"""What every benchmark peer shares: the solve criterion, resource readings, the result file.

Standard library only: the peers import this module from their own interpreters and virtual
environments (seqrl's ``.venv``, ``.venv-rejax``, ``.venv-sb3``).

Every peer logs one row per policy update (one PPO rollout + its epochs of SGD)::

    {"env_steps": int, "wall_seconds": float, "episodes": int, "return_sum": float}

``wall_seconds`` counts from the start of training INCLUDING compilation; ``episodes`` and
``return_sum`` cover the training episodes that ended during that update. The same criterion is
then applied to every peer (:func:`time_to_return`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any, TypedDict

SOLVE_RETURN = 475.0  # CartPole-v1's reward threshold
# The return each benchmark task counts as solved, by the task names the workers take (--task).
SOLVE_RETURNS = {"cartpole": SOLVE_RETURN, "inverted_pendulum": 700.0}
# Gym's definition of solving CartPole-v1 averages 100 consecutive episodes (the headline); the
# 10-episode window is reported beside it.
SOLVE_WINDOWS = (100, 10)


class UpdateRow(TypedDict):
    env_steps: int
    wall_seconds: float
    episodes: int
    return_sum: float


def time_to_return(
    rows: list[UpdateRow],
    threshold: float = SOLVE_RETURN,
    windows: tuple[int, ...] = SOLVE_WINDOWS,
) -> dict[str, Any]:
    """When training first reached ``threshold``, under several readings of "reached".

    ``windows[str(n)]``: the first update after which the training episodes that ended in the
    most recent updates (walking back until they hold at least ``n`` episodes) average
    ``>= threshold``, so that a few lucky episodes do not count.
    ``first_update``: the first update whose own episodes average ``>= threshold``.
    Each is ``{"wall_seconds", "env_steps"}`` or ``None`` when never reached.
    """

    def at(row: UpdateRow) -> dict[str, float]:
        return {"wall_seconds": row["wall_seconds"], "env_steps": row["env_steps"]}

    first = None
    for row in rows:
        if row["episodes"] > 0 and row["return_sum"] / row["episodes"] >= threshold:
            first = at(row)
            break
    reached: dict[str, dict[str, float] | None] = {}
    for n in windows:
        reached[str(n)] = None
        for i, row in enumerate(rows):
            count, total = 0, 0.0
            for past in reversed(rows[: i + 1]):
                count += past["episodes"]
                total += past["return_sum"]
                if count >= n:
                    break
            if count >= n and total / count >= threshold:
                reached[str(n)] = at(row)
                break
    return {"threshold": threshold, "windows": reached, "first_update": first}


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def worker_parser(description: str) -> argparse.ArgumentParser:
    """The command line every peer worker takes from the orchestrator."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--total-steps", type=int, required=True, help="env steps to train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="file for the JSON result line")
    parser.add_argument("--workdir", type=Path, required=True, help="scratch folder for the run")
    parser.add_argument("--task", choices=sorted(SOLVE_RETURNS), default="cartpole")
    parser.add_argument(
        "--updates-per-chunk",
        type=int,
        default=None,
        help="updates per jitted chunk (a peer that chunks its own loop copies seqrl's plan)",
    )
    return parser


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Writes the peer's result as one JSON line (the orchestrator reads it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    os.replace(tmp, path)


ROOT = Path(__file__).resolve().parents[1]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def seqrl_revision() -> str:
    """The commit measured, marked ``+local changes`` when seqrl's code differs from it."""
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "seqrl", "agents", "envs", "configs"],
            capture_output=True,
        )
    except OSError:
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    rev = head.stdout.decode().strip()
    return rev + (" +local changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def ratio_table(ratios: list[dict], header: str = "ratio") -> list[str]:
    """Markdown rows of a benchmark's peer ratios (``name``, ``value``, ``target``: a number
    meaning ">=", a ready string or None, ``met``: True / False / None)."""
    lines = [f"| {header} | measured | target | |", "|---|---|---|---|"]
    for r in ratios:
        value = "n/a" if r["value"] is None else f"{r['value']:.2f}"
        target = r["target"]
        if target is None:
            target = ""
        elif not isinstance(target, str):
            target = f">= {target:g}"
        verdict = {True: "met", False: "MISSED", None: "n/a"}[r["met"]]
        lines.append(f"| {r['name']} | {value} | {target} | {verdict} |")
    return lines


def replace_section(doc: Path, heading: str, section: str) -> None:
    """Writes ``section`` (starting with ``heading``) into ``doc`` in place of the old one."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(heading)
    if start >= 0:
        nxt = text.find("\n## ", start + len(heading))
        before, after = text[:start], ("" if nxt < 0 else text[nxt + 1 :])
    else:
        before, after = text.rstrip("\n") + "\n\n", ""
    doc.write_text(before + section.rstrip("\n") + "\n" + ("\n" + after if after else ""))


def write_report(doc: Path, doc_json: Path, heading: str, report: dict, section: str) -> None:
    """Writes a benchmark's raw report as JSON and its Markdown section into ``doc``."""
    doc_json.parent.mkdir(parents=True, exist_ok=True)
    doc_json.write_text(json.dumps(report, indent=1) + "\n")
    replace_section(doc, heading, section)
    print(f"wrote {doc} and {doc_json}")
