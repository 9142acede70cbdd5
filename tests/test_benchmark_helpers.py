"""The peer comparisons' pure helpers: the solve criterion per task and the ratio rows."""

from benchmarks.common import SOLVE_RETURNS, UpdateRow, time_to_return
from benchmarks.ppo_cartpole import ratios


def row(steps: int, seconds: float, episodes: int, mean: float) -> UpdateRow:
    return UpdateRow(
        env_steps=steps, wall_seconds=seconds, episodes=episodes, return_sum=episodes * mean
    )


def test_time_to_return_uses_the_task_threshold():
    rows = [row(100, 1.0, 5, 600.0), row(200, 2.0, 5, 800.0), row(300, 3.0, 10, 1000.0)]
    solve = time_to_return(rows, SOLVE_RETURNS["inverted_pendulum"], windows=(10,))
    # the window walks back to >= 10 episodes: (600*5 + 800*5) / 10 = 700 reaches 700
    assert solve["windows"]["10"] == {"wall_seconds": 2.0, "env_steps": 200}
    assert solve["first_update"] == {"wall_seconds": 2.0, "env_steps": 200}
    assert time_to_return(rows, 1001.0, windows=(10,))["windows"]["10"] is None


def test_ratios_with_and_without_a_target():
    results = {"seqrl": {"speed": 6.0, "wall": 1.0}, "sb3": {"speed": 2.0, "wall": None}}
    targets = (
        ("speed", "seqrl", "sb3", "speed", ">=", 2.0),
        ("speed, no target", "seqrl", "sb3", "speed", ">=", None),
        ("wall", "seqrl", "sb3", "wall", "<=", 0.5),
    )
    got = ratios(results, targets)
    assert got[0] == {"name": "speed", "value": 3.0, "target": ">= 2", "met": True}
    assert got[1] == {"name": "speed, no target", "value": 3.0, "target": None, "met": None}
    assert got[2]["value"] is None and got[2]["met"] is None


def test_a_resumed_meta_pipeline_reports_the_steps_it_reused(tmp_path):
    from benchmarks.meta_pipeline import reused_steps

    previous = tmp_path / "meta_x.json"
    assert reused_steps(previous, {"train DT": 3.0}) == {}  # no earlier run: nothing reused
    # the earlier run had itself reused its experts from a run before it
    previous.write_text(
        '{"reused_seconds": {"PPO experts": 900.0},'
        ' "step_seconds": {"collect": 30.0, "train DT": 60.0, "train Meta-DT": 100.0}}'
    )
    # this run re-trained Meta-DT only: the experts, the data and the DT came from before
    got = reused_steps(previous, {"train Meta-DT": 101.0, "eval-meta Meta-DT zero-shot": 9.0})
    assert got == {"PPO experts": 900.0, "collect": 30.0, "train DT": 60.0}
