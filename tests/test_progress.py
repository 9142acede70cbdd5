"""Progress outside a terminal (a CI log, nohup, a pipe): whole plain lines, throttled, with
steps, steps/s, return and ETA; never a redrawn bar's fragments."""

import io

from seqrl.logging import ProgressBar


def test_progress_outside_a_terminal_is_whole_plain_lines():
    out = io.StringIO()  # not a terminal
    bar = ProgressBar(1000, "ppo gymnax/CartPole-v1", stream=out, interval=3600.0)
    bar.update(100, 5000.0, None)  # the first update is shown
    bar.update(200, 5100.0, 12.34)  # held back: within the interval
    bar.update(1000, 5200.0, 480.0)  # the last is always shown
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ppo gymnax/CartPole-v1: 100/1,000 steps (10%), 5,000/s, return -")
    assert lines[1] == (
        "ppo gymnax/CartPole-v1: 1,000/1,000 steps (100%), 5,200/s, return 480.0, ETA 0:00:00"
    )
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_held_back_update_is_written_at_close():
    out = io.StringIO()
    bar = ProgressBar(10_000, "dt gymnax/CartPole-v1", stream=out, interval=3600.0, completed=0)
    bar.update(1000, 10.0, 1.0)
    bar.update(2500, 10.0, 2.5)  # a run stopped early (or resumed elsewhere) ends here
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("dt gymnax/CartPole-v1: 2,500/10,000 steps (25%)")
    assert "return 2.5, ETA " in lines[1] and lines[1].split("ETA ")[1] != "-"
