"""The guide's example environment (docs/examples/line_env.py) passes the env contract and PPO
solves it from the CLI-style name `docs.examples.line_env:Line`."""

import jax
import numpy as np

import seqrl
from seqrl import envs

NAME = "docs.examples.line_env:Line"


def test_example_env_follows_the_protocol():
    env = envs.make(NAME)
    params = env.default_params
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == env.observation_space(params).shape
    for _ in range(10):  # ten steps right reach the goal at 1.0
        obs, state, reward, terminated, truncated, info = env.step(
            jax.random.key(0), state, 2, params
        )
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_allclose(info["final_observation"], [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(obs, [0.0, 1.0])  # auto-reset to the start
    np.testing.assert_allclose(float(info["episode_return"]), -4.5, atol=1e-4)


def test_ppo_solves_the_example_env(tmp_path, optimized_training):
    result = seqrl.train(
        "configs/ppo/cartpole.yaml",
        run_dir=tmp_path / "run",
        progress=False,
        env=NAME,
        total_timesteps=50_000,
    )
    # optimal: ten steps right, return -(0.9 + 0.8 + ... + 0.1) = -4.5; standing still: -20
    assert result.summary["final_return_mean"] >= -4.6
