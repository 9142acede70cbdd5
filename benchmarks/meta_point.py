"""The offline meta-RL pipeline on PointRobot (``make meta-point``): see
:mod:`benchmarks.meta_pipeline`, which runs it for every family."""

from __future__ import annotations

from benchmarks import meta_pipeline

HEADING = meta_pipeline.FAMILIES["point-robot"].heading


def render() -> None:
    """Rewrites the docs/results.md section from docs/benchmarks/meta_point.json (no rerun)."""
    meta_pipeline.render("point-robot")


def main(argv: list[str] | None = None) -> int:
    return meta_pipeline.main(["point-robot", *(argv or [])])


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
