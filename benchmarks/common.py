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
import resource
from pathlib import Path
from typing import Any, TypedDict

SOLVE_RETURN = 475.0  # CartPole-v1's reward threshold
SOLVE_WINDOW_EPISODES = 10  # smooth over at least this many recent training episodes


class UpdateRow(TypedDict):
    env_steps: int
    wall_seconds: float
    episodes: int
    return_sum: float


def time_to_return(
    rows: list[UpdateRow],
    threshold: float = SOLVE_RETURN,
    window_episodes: int = SOLVE_WINDOW_EPISODES,
) -> dict[str, Any]:
    """When training first reached ``threshold``, under two readings of "reached".

    ``smoothed``: the first update after which the training episodes that ended in the most
    recent updates (walking back until they hold at least ``window_episodes`` episodes) average
    ``>= threshold``. This is the headline number: one lucky episode does not count.
    ``first_update``: the first update whose own episodes average ``>= threshold``.
    Each is ``{"wall_seconds", "env_steps"}`` or ``None`` when never reached.
    """
    smoothed = first = None
    for i, row in enumerate(rows):
        reached = row["episodes"] > 0 and row["return_sum"] / row["episodes"] >= threshold
        if first is None and reached:
            first = {"wall_seconds": row["wall_seconds"], "env_steps": row["env_steps"]}
        if smoothed is None:
            count, total = 0, 0.0
            for past in reversed(rows[: i + 1]):
                count += past["episodes"]
                total += past["return_sum"]
                if count >= window_episodes:
                    break
            if count >= window_episodes and total / count >= threshold:
                smoothed = {"wall_seconds": row["wall_seconds"], "env_steps": row["env_steps"]}
    return {
        "threshold": threshold,
        "window_episodes": window_episodes,
        "smoothed": smoothed,
        "first_update": first,
    }


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
    return parser


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Writes the peer's result as one JSON line (the orchestrator reads it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    os.replace(tmp, path)
