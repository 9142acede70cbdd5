"""PPO: learning on CartPole, seeds and hyperparameters as vmap axes (continuous actions and
every backbone learn in tests/test_learning.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import config as cfg
from seqrl.agents import ppo
from seqrl.heads import Categorical
from seqrl.loop import run

CARTPOLE = "configs/ppo/cartpole.yaml"
# 4 envs x 16 steps, 4 updates: enough to exercise every code path, cheap to compile.
TINY = ["total_timesteps=256", "ppo.num_steps=16", "loop.num_chunks=2", "loop.eval_episodes=4"]


@pytest.mark.slow
def test_cartpole_learns_to_475_and_writes_the_run_directory(tmp_path, optimized_training):
    config = cfg.load_config(CARTPOLE)
    result = run(config, run_dir=tmp_path / "run", progress=False, log=lambda _: None)
    summary = result.summary
    assert summary["final_return_mean"] >= 475, summary
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "curve.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / str(summary["total_updates"])).is_dir()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "agent",
        "env",
        "total_env_steps",
        "compile_seconds",
        "train_seconds",
        "env_steps_per_second",
        "final_return_mean",
        "final_return_std",
        "peak_rss_mb",
        "seed",
        "num_seeds",
        "devices",
        "versions",
    ):
        assert key in on_disk, key
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["total_updates"] == 976
    assert rows[-1]["env_steps"] == summary["total_env_steps"]
    # TensorBoard holds the same numbers: one event per update, at its env step
    events = tensorboard_scalars(next((run_dir / "tensorboard").glob("events.out.tfevents.*")))
    assert [step for step, _ in events] == [r["env_steps"] for r in rows]
    for (_, scalars), row in zip(events, rows, strict=True):
        assert scalars["train/episodes"] == row["episodes"]
        assert scalars["train/policy_loss"] == pytest.approx(row["policy_loss"], rel=1e-6)
        if row["return_mean"] is None:
            assert "train/return_mean" not in scalars


def tensorboard_scalars(path):
    """``[(step, {tag: value})]`` of an event file, read from its TFRecord framing (8-byte
    length, 4-byte CRC, the Event proto, 4-byte CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i : i + 8])
        event = Event.FromString(data[i + 12 : i + 12 + length])
        i += 12 + length + 4
        if event.HasField("summary"):
            out.append((event.step, {v.tag: v.simple_value for v in event.summary.value}))
    return out


def test_seeds_are_a_vmap_axis_equal_to_separate_runs():
    config = cfg.load_config(CARTPOLE, TINY)
    train = jax.jit(ppo.make_train(config))
    keys = jnp.stack([jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    batched, metrics = jax.jit(jax.vmap(ppo.make_train(config)))(keys)
    single, _ = train(keys[1])
    for a, b in zip(jax.tree.leaves(batched.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)
    assert metrics["policy_loss"].shape == (2, config.num_updates)


def test_traced_hyperparameters_vmap_one_compile():
    """One compiled program trains with lr = 0 (parameters stay put) and lr > 0."""
    config = cfg.load_config(CARTPOLE, TINY)
    trainer = ppo.make_trainer(config)
    base = ppo.hyperparams_from(config)
    hparams = jax.tree.map(lambda x: jnp.stack([x, x]), base).replace(lr=jnp.array([0.0, 1e-3]))

    def train(key, h):
        state = trainer.init(key, h)
        start = state.params
        state, _ = jax.lax.scan(lambda s, _: trainer.update(s), state, None, 3)
        return start, state.params

    start, end = jax.jit(jax.vmap(train, in_axes=(None, 0)))(jax.random.PRNGKey(0), hparams)
    moved = [
        np.abs(e - s).max(axis=tuple(range(1, e.ndim)))
        for s, e in zip(jax.tree.leaves(start), jax.tree.leaves(end))
    ]
    moved = np.max(np.stack(moved), axis=0)
    assert moved[0] == 0.0 and moved[1] > 1e-4


def test_clipped_loss_by_hand():
    """Two samples, both taken with probability 0.5 by the acting policy; now 0.8 (advantage
    +1: ratio 1.6 clipped to 1.2) and 0.2 (advantage -1: ratio 0.4 clipped to 0.8), so the
    policy loss is mean(-1.2, 0.8) = -0.2. Values 0.5 and -0.1 from old values 0, targets 1 and
    -1: the first is clipped to 0.2, so 0.5 mean((0.2 - 1)^2, (-0.1 + 1)^2) = 0.3625."""
    probs = jnp.array([[[0.8, 0.2], [0.8, 0.2]]])
    dist = Categorical(jnp.log(probs))
    batch = ppo.Batch(
        obs=jnp.zeros((1, 2, 1)),
        first=jnp.zeros((1, 2), bool),
        action=jnp.array([[0, 1]]),
        log_prob=jnp.log(jnp.full((1, 2), 0.5)),
        value=jnp.zeros((1, 2)),
        advantage=jnp.array([[1.0, -1.0]]),
        target=jnp.array([[1.0, -1.0]]),
    )
    h = ppo.hyperparams_from(cfg.load_config(CARTPOLE))  # clip 0.2, vf 0.5, entropy 0.01
    total, stats = ppo.clipped_loss(dist, jnp.array([[0.5, -0.1]]), batch, h)
    entropy = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))
    kl = ((1.6 - 1) - np.log(1.6) + (0.4 - 1) - np.log(0.4)) / 2
    expected = dict(
        policy_loss=-0.2, value_loss=0.3625, entropy=entropy, approx_kl=kl, clip_fraction=1.0
    )
    np.testing.assert_allclose(stats, [expected[k] for k in ppo.LOSS_STATS], rtol=1e-5)
    np.testing.assert_allclose(total, -0.2 + 0.5 * 0.3625 - 0.01 * entropy, rtol=1e-5)
    # inside the clip range nothing is clipped: ratios 1.1 and 0.9
    near = Categorical(jnp.log(jnp.array([[[0.55, 0.45], [0.55, 0.45]]])))
    _, stats = ppo.clipped_loss(near, jnp.zeros((1, 2)), batch, h)
    np.testing.assert_allclose(stats[0], -(1.1 * 1 + 0.9 * -1) / 2, rtol=1e-5)
    assert float(stats[4]) == 0.0


@pytest.mark.parametrize("backbone", ["mlp", "gru"])
def test_minibatches_partition_the_rollout_and_normalize_its_advantages(backbone):
    """Each epoch's minibatches hold every sample once; a recurrent network's split over envs
    with each env's whole sequence and its own starting carry; advantages standardized per
    minibatch."""
    config = cfg.load_config(
        CARTPOLE, [f"network.backbone={backbone}", "network.d_model=4", "num_envs=8"]
    )
    trainer = ppo.make_trainer(config)
    steps, envs = 5, 8
    env_id = jnp.broadcast_to(jnp.arange(envs, dtype=jnp.float32), (steps, envs))
    sample_id = jnp.arange(steps * envs, dtype=jnp.float32).reshape(steps, envs)
    advantage = jax.random.normal(jax.random.key(0), (steps, envs)) * 3.0 + 1.0
    batch = ppo.Batch(
        obs=jnp.stack([env_id, sample_id, env_id, sample_id], -1),
        first=jnp.zeros((steps, envs), bool),
        action=jnp.zeros((steps, envs), jnp.int32),
        log_prob=sample_id,
        value=sample_id,
        advantage=advantage,
        target=sample_id,
    )
    carry = jax.tree.map(
        lambda c: c + jnp.arange(envs, dtype=c.dtype).reshape(-1, *[1] * (c.ndim - 1)),
        trainer.internals.network.initialize_carry(envs),
    )
    carries, batches = jax.jit(trainer.internals.minibatches)(jax.random.key(1), carry, batch)
    ids = np.asarray(batches.obs[..., 1])  # [minibatch, T', samples]
    assert ids.shape[0] == 4 and sorted(ids.reshape(-1).tolist()) == list(range(steps * envs))
    np.testing.assert_array_equal(np.asarray(batches.log_prob), ids)  # fields stay together
    adv = np.asarray(batches.advantage)
    np.testing.assert_allclose(adv.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(adv.std(axis=(1, 2)), 1.0, atol=1e-4)
    flat = np.asarray(advantage).reshape(-1)[ids.reshape(-1).astype(int)].reshape(ids.shape)
    expected = (flat - flat.mean(axis=(1, 2), keepdims=True)) / flat.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(adv, expected, rtol=1e-4, atol=1e-5)
    if backbone == "gru":  # whole sequences per env, each with that env's carry
        env_of = np.asarray(batches.obs[..., 0])  # [minibatch, T, envs / 4]
        assert (env_of == env_of[:, :1]).all()
        np.testing.assert_array_equal(np.asarray(carries[0])[:, :, 0], env_of[:, 0])
