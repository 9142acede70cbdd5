"""Recurrent PPO: truncation bootstraps from V(final observation | the episode's own memory);
a resumed recurrent run (complex S5 state in the checkpoint) equals an uninterrupted one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import config as cfg
from seqrl.agents import ppo
from seqrl.api import load
from seqrl.loop import run
from seqrl.returns import gae

# the guide's Line env: 20-step episodes end by truncation unless the goal is reached
LINE = "docs.examples.line_env:Line"


@pytest.mark.parametrize("backbone", ["mlp", "gru", "s5"])
def test_bootstrap_values_continue_the_carry_without_reset(backbone):
    conf = cfg.load_config(
        "configs/ppo/cartpole.yaml",
        [
            f"env={LINE}",
            f"network.backbone={backbone}",
            "network.d_model=8",
            "network.state_size=8",
            "ppo.num_steps=48",
            "total_timesteps=192",
        ],
    )
    trainer = ppo.make_trainer(conf)
    parts = trainer.internals
    net, collect, advantages = parts.network, parts.collect, parts.advantages
    state = jax.jit(trainer.init)(jax.random.PRNGKey(3))
    start_carry = state.carry
    state, traj = jax.jit(collect)(state)
    adv, _ = jax.jit(advantages)(state, traj)
    assert bool(traj.done.any()), "the rollout must cross an episode boundary"

    # reference: step the network one observation at a time, and after each step evaluate the
    # final observation from the new carry (no reset)
    def step(carry, t):
        carry, _, _ = net.apply(state.params, carry, traj.obs[t][None], traj.first[t][None])
        _, _, v = net.apply(
            state.params, carry, traj.final_obs[t][None], jnp.zeros_like(traj.first[t])[None]
        )
        return carry, v[0]

    steps = jnp.arange(traj.obs.shape[0])
    _, expected = jax.jit(lambda c: jax.lax.scan(step, c, steps))(start_carry)
    h = state.hparams
    ref_adv, _ = gae(
        traj.reward, traj.value, expected, traj.terminated, traj.done, h.gamma, h.gae_lambda
    )
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-5)


def test_recurrent_resume_equals_uninterrupted(tmp_path):
    conf = cfg.load_config(
        "configs/ppo/popgym/stateless_cartpole_s5.yaml",
        [
            "num_envs=4",
            "ppo.num_steps=32",
            "total_timesteps=1024",
            "loop.num_chunks=4",
            "network.d_model=16",
            "network.state_size=16",
            "loop.eval_episodes=2",
        ],
    )
    quiet = {"progress": False, "log": lambda _: None}
    run(conf, run_dir=tmp_path / "full", **quiet)
    run(conf, run_dir=tmp_path / "part", stop_after_chunks=2, **quiet)
    run(conf, run_dir=tmp_path / "part", resume=True, **quiet)
    a, b = load(tmp_path / "full").state, load(tmp_path / "part").state
    assert a.carry[0].dtype == jnp.complex64
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_two_seeds_of_a_recurrent_network_train(tmp_path):
    """Regression: XLA:CPU (jax 0.10.2) hangs at run time on the vmapped init of a GRU/S5
    network of d_model 64 over two seeds; the loop initializes seeds with lax.map. Run in a
    subprocess so a hang fails the test instead of the suite."""
    import json
    import os
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "seqrl.cli",
        "train",
        "configs/ppo/popgym/stateless_cartpole_gru.yaml",
        "num_seeds=2",
        "total_timesteps=8192",
        "loop.num_chunks=1",
        "loop.eval_episodes=2",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["final_return_per_seed"]) == 2
