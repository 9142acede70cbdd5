"""Decision Transformer: causality, the window sampler at episode starts and ends, return
conditioning (the return it is asked for, with either head) and the pipeline through the loop."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import config as cfg
from seqrl.agents import dt
from seqrl.data import Trajectories
from seqrl.returns import returns_to_go

TINY = {
    "agent": "dt",
    "env": "gymnax/CartPole-v1",
    "dataset": "unused-in-these-tests",
    "total_updates": 40,
    "num_envs": 4,
    "dt": {
        "context": 5,
        "embed_dim": 16,
        "num_layers": 2,
        "num_heads": 2,
        "batch_size": 8,
        "warmup_steps": 10,
        "return_scale": 100.0,
    },
    "loop": {"num_chunks": 2, "eval_episodes": 4},
}


def _trajectories(n=6, max_len=12, obs_dim=4, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, n).astype(np.int32)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    obs = rng.normal(size=(n, max_len, obs_dim)).astype(np.float32) * valid[..., None]
    actions = (rng.integers(0, 2, (n, max_len)) * valid).astype(np.int32)
    rewards = valid.astype(np.float32)
    return types.SimpleNamespace(obs=obs, actions=actions, rewards=rewards, lengths=lengths)


def test_returns_to_go_by_hand():
    rewards = jnp.array([[1.0, 2.0, 3.0, 9.0]])
    np.testing.assert_allclose(returns_to_go(rewards, jnp.array([3])), [[6, 5, 3, 0]])


def test_window_at_episode_start_middle_and_end():
    traj = _trajectories()
    conf = cfg.load_config(TINY)
    data, _, _ = dt.window_data(traj, conf)
    n = 2
    length = int(traj.lengths[n])
    rtg = np.cumsum(traj.rewards[n, :length][::-1])[::-1] / 100.0
    window = jax.jit(dt.sample_window, static_argnums=3)
    # from the first step: a full window when the episode is long enough
    w = window(data, jnp.int32(n), jnp.int32(0), 5)
    steps = min(5, length)
    np.testing.assert_array_equal(w.mask, [0] * (5 - steps) + [1] * steps)
    np.testing.assert_array_equal(w.timesteps[5 - steps :], np.arange(steps))
    np.testing.assert_allclose(w.rtg[5 - steps :], rtg[:steps], rtol=1e-6)
    # two steps before the end: two real steps, left-padded with zeros
    w = window(data, jnp.int32(n), jnp.int32(length - 2), 5)
    np.testing.assert_array_equal(w.mask, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(w.timesteps, [0, 0, 0, length - 2, length - 1])
    np.testing.assert_array_equal(w.actions[3:], traj.actions[n, length - 2 : length])
    assert float(jnp.abs(w.obs[:3]).max()) == 0.0 and float(jnp.abs(w.rtg[:3]).max()) == 0.0
    # sampled batches: real steps are contiguous at the right end, consecutive in time, and
    # never past the longest episode
    batch = jax.jit(dt.sample_batch, static_argnums=(2, 3))(jax.random.key(0), data, 256, 5)
    mask, t = np.asarray(batch.mask), np.asarray(batch.timesteps)
    assert np.all(np.diff(mask, axis=1) >= 0) and np.all(mask[:, -1] == 1)
    assert np.all((np.diff(t, axis=1) == 1) | (mask[:, :-1] == 0))
    assert t.max() < traj.lengths.max()


def test_output_at_step_t_ignores_inputs_after_t():
    conf = cfg.load_config(TINY)
    model = dt.make_model(conf, __import__("seqrl").envs.Discrete(2))
    k = 5
    key = jax.random.key(1)
    rtg = jax.random.normal(key, (1, k))
    obs = jax.random.normal(jax.random.fold_in(key, 1), (1, k, 4))
    actions = jnp.array([[0, 1, 1, 0, 1]])
    t = jnp.arange(k)[None]
    mask = jnp.ones((1, k))
    params = jax.jit(model.init)(key, rtg, obs, actions, t, mask)
    apply = jax.jit(lambda *a: model.apply(params, *a).logits)
    base = apply(rtg, obs, actions, t, mask)
    for step in range(k - 1):
        # change everything after step (and the action AT step, which it must not see)
        later = jnp.arange(k) > step
        rtg2 = jnp.where(later, rtg + 3.0, rtg)
        obs2 = jnp.where(later[None, :, None], obs - 2.0, obs)
        actions2 = actions.at[0, step:].set(1 - actions[0, step:])
        out = apply(rtg2, obs2, actions2, t, mask)
        np.testing.assert_allclose(out[0, : step + 1], base[0, : step + 1], atol=1e-5)
        assert not np.allclose(out[0, step + 1 :], base[0, step + 1 :])


def match_cue_data(episodes: int = 256, length: int = 10, seed: int = 0) -> Trajectories:
    """``probe/MatchCue-v0`` played by behaviour policies of every skill: each episode names
    the cue right with its own probability p ~ U(0, 1), so returns span 0 to ``length`` and the
    right action depends on the state (the cue) and on how much return is still wanted."""
    rng = np.random.default_rng(seed)
    cues = rng.integers(0, 2, (episodes, length))
    skill = rng.uniform(0, 1, (episodes, 1))
    right = rng.random((episodes, length)) < skill
    last = np.arange(length)[None].repeat(episodes, 0) == length - 1
    one_hot = np.eye(2, dtype=np.float32)
    return Trajectories(
        obs=one_hot[cues],
        actions=np.where(right, cues, 1 - cues).astype(np.int32),
        rewards=right.astype(np.float32),
        terminated=last,
        truncated=np.zeros_like(last),
        lengths=np.full(episodes, length, np.int32),
        final_obs=one_hot[rng.integers(0, 2, episodes)],
    )


MATCH_CUE = {
    "agent": "dt",
    "env": "probe/MatchCue-v0",
    "dataset": "in-memory",
    "total_updates": 200,
    "num_envs": 16,
    "dt": {
        "context": 4,
        "embed_dim": 32,
        "num_layers": 1,
        "num_heads": 2,
        "batch_size": 64,
        "warmup_steps": 20,
        "lr": 1e-3,
        "dropout": 0.0,
        "return_scale": 10.0,
        "max_timestep": 16,
    },
}
TARGETS = [0.0, 2.0, 3.0, 5.0, 7.0, 8.0, 10.0]


@pytest.mark.parametrize("head", ["categorical", "fourier"])
def test_dt_gets_the_return_it_is_asked_for(head):
    """Trained on episodes of every skill, the DT names exactly R cues right when asked for R:
    it must read its return-to-go (else one return for every target), its states (else about
    5 of 10 whatever the target) and count the return down as rewards arrive. All targets are
    evaluated by one compiled program (a vmap over the traced target)."""
    conf = cfg.load_config(MATCH_CUE, {"dt.head": head})
    trainer = dt.make_trainer(conf, match_cue_data())

    def train(key):
        state = trainer.init(key)
        return jax.lax.scan(lambda s, _: trainer.update(s, trainer.data), state, None, 200)

    state, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    loss = np.asarray(metrics["action_loss"])
    assert loss[-20:].mean() < 0.6 * loss[:5].mean()  # from log 2 towards the data's entropy

    def achieved(target):
        return trainer.evaluate(state, jax.random.PRNGKey(1), 16, True, target_return=target)

    out = jax.jit(jax.vmap(achieved))(jnp.asarray(TARGETS))
    returns = np.asarray(out["returns"])
    assert returns.shape == (len(TARGETS), 16)
    np.testing.assert_allclose(returns.mean(1), TARGETS, atol=0.5)
    # the action distribution as evaluation sees it: the head's own kind
    windows = dt.sample_batch(jax.random.key(1), trainer.data, 16, 4)
    dist = jax.jit(trainer.internals.action_distribution)(state, windows)
    np.testing.assert_allclose(dist.probs().sum(-1), 1.0, atol=1e-5)
    assert (dist.coefficients is not None) == (head == "fourier")


@pytest.mark.slow
def test_ppo_collect_dt_end_to_end(tmp_path):
    """A tiny pipeline: PPO run -> `seqrl collect` -> DT trained on the dataset -> evaluated at a
    target return, all through the public API; the DT's dataset checks are enforced."""
    from test_collect import TINY as TINY_PPO  # the same programs as test_collect's run

    import seqrl
    from seqrl.errors import ConfigError

    quiet = {"progress": False}
    ppo_run = seqrl.train(
        "configs/ppo/cartpole.yaml", run_dir=tmp_path / "ppo", overrides=TINY_PPO, **quiet
    )
    dataset = tmp_path / "data" / "cartpole-expert-v0"
    seqrl.collect(ppo_run.run_dir, 7, dataset, log=lambda _: None)
    result = seqrl.train(
        TINY,
        run_dir=tmp_path / "dt",
        overrides={"dataset": str(dataset), "loop.eval_episodes": 4},
        **quiet,
    )
    s = result.summary
    assert s["agent"] == "dt" and s["total_samples"] == 40 * 8 and s["samples_per_second"] > 0
    policy = seqrl.load(result.run_dir)
    # the checkpoint holds the state the run ended with: the run's own final evaluation, run
    # again on it, gives the summary's return
    again = policy.final_evaluation()["returns"]
    assert again.shape == (1, 4) and float(again.mean()) == s["final_return_mean"]
    seen = {}  # the target reaches the DT's evaluation (it was once dropped on the way)
    evaluate = policy.trainer.evaluate
    policy.trainer = dataclasses.replace(
        policy.trainer, evaluate=lambda *a, **k: (seen.update(k), evaluate(*a, **k))[1]
    )
    low = policy.evaluate_all(4, target_return=1.0)["returns"]
    assert low.shape == (1, 4)
    assert seen == {"target_return": 1.0}
    with pytest.raises(ConfigError, match="do not fit"):
        dt.make_trainer(
            cfg.load_config(TINY, {"env": "gymnax/Acrobot-v1", "dataset": str(dataset)})
        )
