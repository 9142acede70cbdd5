"""What PPO's parts are for, learned in seconds on probe tasks (envs/probes.py).

- Memory: every backbone is trained on ``probe/Recall-v0`` (name the symbol shown now and the
  one shown a step before). Each recurrent backbone (GRU, LSTM, S5, S4D) must reach the memory
  score 1.0; the MLP must learn the memoryless half (from 0.53 to its ceiling 0.78) and no
  more; S5 must beat the MLP.
- Replay: the same compiled program trains a second copy with learning rate 0 (a vmap over the
  traced lr). Its parameters never move, so PPO's loss, which re-runs each rollout from the
  carry it started with and the episode starts it saw, must score exactly the policy that
  acted: ratio 1 (approximate KL 0, nothing clipped). A loss that loses the carry or the resets
  fails here for every recurrent backbone.
- Continuous heads (Gaussian, tanh-Gaussian, Fourier) learn to hit ``probe/Target-v0``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import config as cfg
from seqrl import runtime
from seqrl.agents import ppo

pytestmark = pytest.mark.xdist_group("learning")  # one worker: each program compiles once

RECALL = "configs/ppo/probes/recall.yaml"
TARGET = "configs/ppo/probes/target.yaml"
BACKBONES = ["mlp", "gru", "lstm", "s5", "s4d"]
RANDOM, MEMORYLESS = 0.53, 0.78  # Recall's returns (envs/probes.py)


@functools.cache
def recall_metrics(backbone: str) -> dict:
    """Per-update metrics ``[2, updates]``: row 0 trained as configured, row 1 with lr 0."""
    config = cfg.load_config(RECALL, [f"network.backbone={backbone}"])
    trainer = ppo.make_trainer(config)
    base = ppo.hyperparams_from(config)
    both = jax.tree.map(lambda x: jnp.stack([x, x]), base).replace(
        lr=jnp.stack([base.lr, jnp.float32(0.0)])
    )

    def train(hparams):
        state = trainer.init(jax.random.PRNGKey(0), hparams)
        return jax.lax.scan(lambda s, _: trainer.update(s), state, None, trainer.num_updates)[1]

    return jax.tree.map(np.asarray, run_once(jax.vmap(train), both))


def run_once(fn, *args):
    """``fn(*args)`` compiled at XLA's optimization level 1, not the suite's 0: a whole
    training run is long enough that level 1's faster code pays for its compile."""
    return jax.jit(fn).lower(*args).compile(compiler_options=runtime.RUN_ONCE_OPTIONS)(*args)


def _late_return(metrics: dict, row: int = 0) -> float:
    """Mean training return of the last eighth of the updates."""
    returns = metrics["episode_return"][row]
    return float(np.nanmean(returns[-len(returns) // 8 :]))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_learns_what_it_can_of_recall(backbone):
    metrics = recall_metrics(backbone)
    lr = metrics["lr"][0]  # annealed linearly from the configured 3e-3 towards 0
    np.testing.assert_allclose(lr, 3e-3 * (1 - np.arange(lr.size) / lr.size), rtol=1e-5)
    first = float(np.nanmean(metrics["episode_return"][0, :2]))
    late = _late_return(metrics)
    assert first < 0.7, first  # it starts near random (0.53)
    if backbone == "mlp":  # the memoryless half, and nothing more
        assert MEMORYLESS - 0.06 <= late <= MEMORYLESS + 0.04, late
    else:
        assert late >= 0.95, late


def test_s5_beats_the_mlp_on_recall():
    s5, mlp = _late_return(recall_metrics("s5")), _late_return(recall_metrics("mlp"))
    assert s5 >= mlp + 0.15, (s5, mlp)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ppo_loss_replays_the_policy_that_acted(backbone):
    """With lr 0 the rollout's log-probabilities, recomputed in the loss over whole sequences
    (T = 12, episodes of 8 steps: rollouts start inside episodes and cross their ends), equal
    those of acting step by step."""
    metrics = recall_metrics(backbone)
    assert float(metrics["approx_kl"][1].max()) < 1e-8
    assert float(metrics["clip_fraction"][1].max()) == 0.0
    assert float(metrics["lr"][1].max()) == 0.0
    assert abs(_late_return(metrics, row=1) - RANDOM) < 0.06  # and nothing was learned


@pytest.mark.parametrize(
    "head, normalize", [("gaussian", False), ("tanh_gaussian", False), ("fourier", True)]
)
def test_continuous_heads_learn_to_hit_the_target(head, normalize):
    """From about -0.5 (a wide density over [-1, 1]) to within 0.1 of the best return, 0 (one
    head through the observation and reward normalizers too)."""
    wrappers = [f"wrappers.normalize_obs={normalize}", f"wrappers.normalize_reward={normalize}"]
    config = cfg.load_config(TARGET, [f"network.head={head}", *wrappers])
    _, metrics = run_once(ppo.make_train(config), jax.random.PRNGKey(0))
    returns = np.asarray(metrics["episode_return"])
    assert float(returns[0]) < -0.3, returns[:4]
    late = float(np.nanmean(returns[-len(returns) // 8 :]))
    assert late > -0.1, late
