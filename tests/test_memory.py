"""Memory matters: S5-PPO learns StatelessCartPole (velocities are not observed), a feed-forward
policy cannot (a small version of configs/ppo/popgym/stateless_cartpole_*.yaml)."""

import pytest

from seqrl import config as cfg
from seqrl.loop import run

SMALL = ["total_timesteps=163840", "loop.num_chunks=4", "loop.eval_episodes=32"]


@pytest.mark.slow
def test_s5_beats_mlp_on_stateless_cartpole(tmp_path):
    results = {}
    for backbone in ("s5", "mlp"):
        conf = cfg.load_config(f"configs/ppo/popgym/stateless_cartpole_{backbone}.yaml", SMALL)
        result = run(conf, run_dir=tmp_path / backbone, progress=False, log=lambda _: None)
        results[backbone] = result.summary["final_return_mean"]
    # returns are episode length / 200: 1.0 balances the pole for the whole episode
    assert results["s5"] >= 0.8, results
    assert results["s5"] >= results["mlp"] + 0.3, results
