"""What every benchmark peer shares: the solve criterion, resource readings, the result file, and
the orchestrators' side of it (running a worker process, the JSON report, the docs' sections).

Standard library only: the peers import this module from their own interpreters and virtual
environments (seqrl's ``.venv``, ``.venv-rejax``, ``.venv-sb3``), so it may import nothing that
one of them lacks (the workers' third-party modules are passed in, never imported here).

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
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib.metadata import version
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


def timed_imports(imports: Callable[[], Any]) -> tuple[Any, float]:
    """What ``imports()`` returns and the seconds it took (a worker times its heavy imports)."""
    start = time.perf_counter()
    modules = imports()
    return modules, time.perf_counter() - start


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed version of each distribution, by name."""
    return {pkg: version(pkg) for pkg in packages}


def xla_threads(devices: Iterable[Any]) -> dict[str, Any]:
    """A JAX worker's thread settings: ``XLA_FLAGS`` and the devices JAX sees."""
    return {
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "unset (XLA defaults)"),
        "jax_devices": [str(d) for d in devices],
    }


def torch_threads(torch: Any) -> dict[str, int]:
    """A PyTorch worker's thread pools (``torch`` is the worker's imported module)."""
    return {
        "torch_intra_op_threads": torch.get_num_threads(),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
    }


def ppo_result(
    about: dict[str, Any],
    timings: dict[str, float],
    *,
    env_steps: int,
    train_seconds: float,
    final_returns: tuple[float, float],
    eval_episodes: int,
    rows: list[UpdateRow],
    task: str,
    import_seconds: float,
    versions: dict[str, str],
    threads: dict[str, Any],
) -> dict[str, Any]:
    """A PPO peer's result line, the same keys for every peer that trains in its own loop.

    ``about``: ``peer``, ``algorithm``, ``hyperparameters``; ``timings``: ``compile_seconds``
    (and any other setup seconds), rounded; ``final_returns``: the mean and standard deviation
    of the final deterministic evaluation's ``eval_episodes`` episodes; ``rows``: one
    :class:`UpdateRow` per update, judged by the task's solve criterion.
    """
    return {
        **about,
        "env_steps": env_steps,
        **timings,
        "train_seconds": round(train_seconds, 3),
        "env_steps_per_second": round(env_steps / max(train_seconds, 1e-9), 1),
        "final_return": final_returns[0],
        "final_return_std": final_returns[1],
        "final_eval": f"{eval_episodes} episodes, deterministic (policy mode)",
        "solve": time_to_return(rows, SOLVE_RETURNS[task]),
        "import_seconds": round(import_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "versions": versions,
        "threads": threads,
        "updates": rows,
    }


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


def find_section(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section under ``heading`` stands in ``text``: its first character and the one
    after its last (the next ``## `` heading's, or the end of the text); None when absent."""
    start = text.find(heading)
    if start < 0:
        return None
    nxt = text.find("\n## ", start + len(heading))
    return start, len(text) if nxt < 0 else nxt + 1


def replace_section(doc: Path, heading: str, section: str) -> None:
    """Writes ``section`` (starting with ``heading``) into ``doc`` in place of the old one."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    span = find_section(text, heading)
    if span:
        before, after = text[: span[0]], text[span[1] :]
    else:
        before, after = text.rstrip("\n") + "\n\n", ""
    doc.write_text(before + section.rstrip("\n") + "\n" + ("\n" + after if after else ""))


def section_notes(doc: Path, heading: str, markers: tuple[str, str]) -> str:
    """The hand-written notes between ``markers`` in ``doc``'s section under ``heading`` (kept
    when a run rewrites the section; "" when there are none)."""
    text = doc.read_text() if doc.exists() else ""
    span = find_section(text, heading)
    section = text[span[0] : span[1]] if span else ""
    start, end = markers
    if start in section and end in section:
        return section.split(start, 1)[1].split(end, 1)[0]
    return ""


def write_report(doc: Path, doc_json: Path, heading: str, report: dict, section: str) -> None:
    """Writes a benchmark's raw report as JSON and its Markdown section into ``doc``."""
    doc_json.parent.mkdir(parents=True, exist_ok=True)
    doc_json.write_text(json.dumps(report, indent=1) + "\n")
    replace_section(doc, heading, section)
    print(f"wrote {doc} and {doc_json}")


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line; a list of scalars, and each item of a list of lists or dicts,
    on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and all(isinstance(x, list | dict) for x in obj):
        return "[\n" + ",\n".join(inner + json.dumps(x) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def save_report(report: dict, json_path: Path, also: Path | None = None) -> None:
    """Writes a peer comparison's report as :func:`dumps` JSON into ``json_path`` (and ``also``,
    the path of ``--json``, when given)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(dumps(report) + "\n")
    print(f"\nresults: {json_path.relative_to(ROOT)}")
    if also:
        also.write_text(dumps(report) + "\n")


def versions_text(by_label: dict[str, dict[str, str]]) -> str:
    """``label: package version, ...; label: ...`` for a report's Versions line."""
    return "; ".join(
        f"{label}: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        for label, versions in by_label.items()
    )


def observed_and_notes(facts: list[str], markers: tuple[str, str], notes: str) -> str:
    """The end of a peer comparison's section: this run's observations as a list, then the
    hand-written notes block between ``markers``."""
    observed = "\n".join("- " + f for f in facts)
    return f"Observed in this run:\n{observed}\n\n{markers[0]}\n{notes.strip()}\n{markers[1]}\n"


def print_run(table: str, facts: list[str]) -> None:
    """Prints a comparison's table and this run's observations to the console."""
    print()
    print(table)
    print()
    for line in facts:
        print("- " + line)


# ---------------------------------------------------------------------------------------------
# Running a worker (the orchestrators' side)
# ---------------------------------------------------------------------------------------------


def bench_workdir(name: str, quick: bool) -> Path:
    """A fresh scratch folder for one run of benchmark ``name``: ``runs/bench/<name>-<time>``
    (``-quick`` appended for a quick run)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / "runs" / "bench" / f"{name}-{stamp}{'-quick' if quick else ''}"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def run_header(command: str, quick: bool) -> dict[str, Any]:
    """What every comparison's report records first: mode, date, the command, seqrl's commit and
    the machine."""
    return {
        "quick": quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command + (" --quick" if quick else ""),
        "seqrl_revision": seqrl_revision(),
        "machine": machine(),
    }


def cold_compile_env() -> dict[str, str]:
    """This process's environment for a worker that compiles cold: seqrl's persistent
    compilation cache off, no JAX cache folder inherited."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["SEQRL_COMPILE_CACHE"] = "0"
    return env


def wait_until(proc: subprocess.Popen, deadline: float) -> tuple[int, Any]:
    """Waits for ``proc`` (killing it at ``deadline``, a ``time.perf_counter`` reading); its
    wait status and resource usage."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage
        time.sleep(0.05)


def run_process(
    name: str,
    cmd: list[str],
    out: Path,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    what: str = "",
    preexec_fn: Callable[[], Any] | None = None,
) -> tuple[dict[str, Any], float]:
    """Runs one worker from the repository root, its output into ``log``, to the end (killed
    after ``timeout`` seconds); exits with the log's tail when it fails or writes no ``out``.
    ``env``: the worker's environment, by default :func:`cold_compile_env`'s.

    Returns the result line it wrote plus ``process_wall_seconds``, ``process_peak_rss_mb``,
    ``load_before`` and ``load_after``; and the wall seconds, unrounded. ``what`` follows the
    name in the line announcing the run.
    """
    load_before = load_average()
    print(f"[run] {name}{what} (load {load_before[0]}; log: {log})", flush=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=cold_compile_env() if env is None else env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        status, usage = wait_until(proc, start + timeout)
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if code != 0 or not out.exists():
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        sys.exit(f"[run] {name} failed (exit {code}) after {wall:.0f} s:\n{tail}")
    result = json.loads(out.read_text())
    result["process_wall_seconds"] = round(wall, 2)
    result["process_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["load_before"] = load_before
    result["load_after"] = load_average()
    return result, wall
