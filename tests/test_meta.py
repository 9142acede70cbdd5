"""Task families, the context world model, prompt selection and the meta-RL harness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import config as cfg
from seqrl.agents import meta_dt
from seqrl.agents.meta_acting import max_error_start, window_sums
from seqrl.agents.world_model import (
    Context,
    WorldModel,
    WorldModelConfig,
    context_at,
    train_world_model,
)
from seqrl.cli import main
from seqrl.data import load_meta_dataset, rollout_trajectories
from seqrl.envs import make_raw, make_vec
from seqrl.envs.meta import PointRobot
from seqrl.errors import ConfigError, UserError
from seqrl.evaluate import lane_params
from seqrl.evaluate import lane_rollout as rollout
from seqrl.meta_eval import parse_mode, random_episodes, reference_returns

pytestmark = pytest.mark.xdist_group("meta")  # one worker builds the tiny Meta-DT once


def test_splits_are_deterministic_and_disjoint():
    a, b = PointRobot(), PointRobot()
    train, test = np.asarray(a.split("train")), np.asarray(a.split("test"))
    assert train.shape == (45, 2) and test.shape == (5, 2)
    np.testing.assert_array_equal(train, np.asarray(b.split("train")))
    np.testing.assert_array_equal(test, np.asarray(b.split("test")))
    assert not np.any(np.all(train[:, None] == test[None], axis=-1))  # no test goal in train
    np.testing.assert_array_equal(np.asarray(a.split("all")), np.concatenate([train, test]))
    other = np.asarray(PointRobot(split_seed=1).split("test"))
    assert not np.allclose(other, test)
    env = make_vec("meta/PointRobot", 2)  # evaluation params are the held-out goals
    np.testing.assert_array_equal(np.asarray(env.eval_params(env.default_params).tasks), test)


def test_point_robot_reference_returns_match_the_paper_distribution():
    family = PointRobot()
    tasks = jax.vmap(family.sample_task)(jax.random.split(jax.random.PRNGKey(3), 2000))
    params = lane_params(family, tasks, 1)
    space = family.action_space(family.default_params)

    def random_act(carry, obs, first, key):
        return carry, jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))

    def still(carry, obs, first, key):
        return carry, jnp.zeros_like(obs)

    observe = lambda carry, action, reward, next_obs: carry
    run = lambda act: rollout(family, params, jax.random.PRNGKey(0), act, observe, (), 20)[2]
    assert (
        abs(float(run(random_act).mean()) + 15.88) < 0.4
    )  # the Meta-DT paper's setting: about -15.88
    assert abs(float(run(still).mean()) + 15.27) < 0.4  # about -15.27
    oracle = jax.vmap(family.oracle_action)
    obs, state = jax.vmap(family.reset)(jax.random.split(jax.random.PRNGKey(1), 2000), params)
    total = jnp.zeros(2000)
    for _ in range(20):
        _, state, r, _, _, _ = jax.vmap(family.step)(
            jax.random.split(jax.random.PRNGKey(2), 2000), state, oracle(state), params
        )
        total = total + r
    assert abs(float(total.mean()) + 2.37) < 0.15  # about -2.37
    # the harness's references (eval-meta's normalization) run the same policies on its lanes
    refs = reference_returns(family, tasks, jax.random.PRNGKey(4), episodes=1)
    assert refs["source"] == "oracle policy"
    assert abs(float(refs["oracle"].mean()) + 2.37) < 0.15
    assert abs(float(refs["random"].mean()) + 15.88) < 0.4


def test_trials_keep_one_task_per_trial():
    env = make_raw("meta/PointRobot", episodes_per_trial=2)
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == env.observation_space(params).shape == (6,)
    goal = np.asarray(state.env_state.goal)
    ends = []
    for t in range(40):
        obs, state, r, term, trunc, info = env.step(
            jax.random.PRNGKey(t), state, jnp.ones(2), params
        )
        np.testing.assert_array_equal(np.asarray(state.env_state.goal), goal)
        ends.append((bool(info["inner_episode_done"]), bool(term)))
        np.testing.assert_allclose(obs[2:5], [1.0, 1.0, float(r)])  # previous action, reward
    assert [t for t, (inner, _) in enumerate(ends) if inner] == [19, 39]
    assert [t for t, (_, term) in enumerate(ends) if term] == [39]  # the trial ends once
    assert float(obs[5]) == 1.0  # the next trial starts with the first flag


def test_context_never_sees_step_t_or_later():
    rng = np.random.default_rng(0)
    shapes = [(10, 3), (10, 2), (10,), (10, 3)]
    obs, act, rew, nxt = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
    wmc = WorldModelConfig(horizon=4, gru_dim=8, context_next_state=True)
    model = WorldModel(wmc, 3)
    ctx0 = context_at(obs, act, rew, nxt, jnp.asarray(5), 4)
    batched = jax.tree.map(lambda x: x[None], ctx0)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), batched, obs[:1], act[:1], obs[:1])
    encode = jax.jit(lambda ctx: model.apply(params, ctx, method=WorldModel.encode))
    for t in (0, 1, 5, 9):
        ctx = context_at(obs, act, rew, nxt, jnp.asarray(t), 4)
        np.testing.assert_array_equal(np.asarray(ctx.mask), (np.arange(t - 4, t) >= 0) * 1.0)
        # change every transition from step t on: the context and z of step t do not move
        later = np.arange(10)[:, None] >= t
        changed = (
            jnp.where(later, obs + 7.0, obs),
            jnp.where(later, -act, act),
            jnp.where(later[:, 0], rew * 3 + 1, rew),
            jnp.where(later, nxt - 2.0, nxt),
        )
        ctx2 = context_at(*changed, jnp.asarray(t), 4)
        np.testing.assert_array_equal(np.asarray(encode(ctx)), np.asarray(encode(ctx2)))
        # but it does see transition t - 1
        if t > 0:
            ctx3 = context_at(obs, act, rew.at[t - 1].add(5.0), nxt, jnp.asarray(t), 4)
            assert not np.allclose(np.asarray(encode(ctx)), np.asarray(encode(ctx3)))
    zeros = lambda *s: jnp.zeros(s)
    empty = Context(zeros(4, 3), zeros(4, 2), zeros(4), zeros(4), zeros(4, 3))
    z_empty = np.asarray(encode(empty))
    np.testing.assert_array_equal(z_empty, np.asarray(encode(context_at(obs, act, rew, nxt, 0, 4))))
    # freeze_at T = 6: from step 6 on, the context of step 6 (transitions 2..5); before, unchanged
    for t in (3, 6, 7, 9):
        frozen = context_at(obs, act, rew, nxt, jnp.asarray(t), 4, freeze_at=6)
        want = context_at(obs, act, rew, nxt, jnp.asarray(min(t, 6)), 4)
        for got, expected in zip(jax.tree.leaves(frozen), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(frozen.rewards), np.asarray(rew[2:6]))


def test_prompt_selection_picks_the_maximum_error_window():
    errors = jnp.asarray([0.1, 0.0, 0.2, 3.0, 0.1, 0.1, 2.9, 0.0, 0.0, 0.0])
    expected = [0.3, 3.2, 3.3, 3.2, 3.1, 3.0, 2.9, 0.0]
    np.testing.assert_allclose(window_sums(errors, 3), expected, atol=1e-5)
    assert int(max_error_start(errors, 3)) == 2  # 0.2 + 3.0 + 0.1
    assert int(max_error_start(errors, 1)) == 3
    assert int(max_error_start(errors, 4)) == 3  # 3.0 + 0.1 + 0.1 + 2.9
    # training: the best segment of each task among that task's rows only
    weights = jnp.asarray([1.0, 5.0, 2.0, 9.0, 0.5, 0.7])
    ranges = jnp.asarray([[0, 3], [3, 4], [4, 6]])
    np.testing.assert_array_equal(np.asarray(meta_dt.best_per_task(weights, ranges)), [1, 3, 5])


def test_mode_parsing_has_no_bool_trap(capsys):
    assert parse_mode("zero-shot") == "zero-shot"
    for bad in ("False", "false", "0", "True", "zero_shot"):
        with pytest.raises(UserError):
            parse_mode(bad)
        assert main(["eval-meta", "nowhere", "--mode", bad]) == 2
        assert "--mode" in capsys.readouterr().err
    assert main(["eval-meta", "nowhere", "--mode", "few-shot"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def _random_multitask_data(family, episodes_per_task: int):
    """Random-action episodes of every task of the family, task-major."""
    n = family.num_train + family.num_test
    traj = random_episodes(family, family.split("all"), episodes_per_task, jax.random.PRNGKey(0))
    return traj, np.repeat(np.arange(n), episodes_per_task)


def test_random_episodes_are_aligned_padded_trajectories():
    family = PointRobot(num_train=2, num_test=1)
    traj = random_episodes(family, family.split("all"), 2, jax.random.PRNGKey(0))
    assert traj.obs.shape == (6, 20, 2) and traj.actions.shape == (6, 20, 2)
    np.testing.assert_array_equal(np.asarray(traj.lengths), 20)
    assert not np.asarray(traj.terminated).any()
    np.testing.assert_array_equal(np.asarray(traj.truncated).nonzero()[1], [19] * 6)
    # reward t is paid for the position step t leads to (obs t + 1; final_obs after the last)
    after = np.concatenate([np.asarray(traj.obs)[:, 1:], np.asarray(traj.final_obs)[:, None]], 1)
    goal = np.repeat(np.asarray(family.split("all")), 2, axis=0)[:, None]
    np.testing.assert_allclose(
        np.asarray(traj.rewards), -np.linalg.norm(after - goal, axis=-1), atol=1e-5
    )


TINY_SCALE = 1000.0  # the DT's default return_scale, which TINY keeps
TINY = {
    "agent": "meta_dt",
    "env": "meta/PointRobot",
    "env_kwargs": {"num_train": 4, "num_test": 2},
    "dataset": "in-memory",
    "num_envs": 2,
    "total_updates": 3,
    "dt": {"context": 4, "embed_dim": 16, "num_layers": 1, "batch_size": 8, "max_timestep": 20},
    "meta": {"prompt_length": 3},
    "world_model": {"steps": 5, "gru_dim": 8, "hidden_dim": 8, "batch_size": 16},
}


@pytest.fixture(scope="module")
def tiny_meta_dt():
    """Random-action episodes of 4 training + 2 held-out goals, and a TINY Meta-DT initialized
    (its world model trained) on the training goals' episodes only."""
    family = PointRobot(num_train=4, num_test=2)
    traj, tasks = _random_multitask_data(family, 3)
    train = tasks < 4  # the trainer is given training tasks only
    pick = lambda rows: jax.tree.map(lambda x: np.asarray(x)[rows], traj)
    trainer = meta_dt.make_trainer(cfg.load_config(TINY), (pick(train), tasks[train]))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    return {
        "train": pick(train),
        "test": pick(~train),
        "train_tasks": tasks[train],
        "trainer": trainer,
        "state": state,
    }


def _lanes(agent, state):
    """The acting functions of the tiny Meta-DT on the held-out goals (2 goals x 2 lanes)."""
    return agent.acting(state, "test", True, None)


def test_self_guided_prompt_is_the_planted_max_error_window(tiny_meta_dt):
    """Held-out episodes with a reward the world model cannot predict planted in steps
    s..s+2 (a different s per lane): the prompt is exactly that segment, its states
    normalized, its returns-to-go those of the episode from there, its timesteps s..s+2."""
    trainer, state = tiny_meta_dt["trainer"], tiny_meta_dt["state"]
    fns = _lanes(trainer.meta, state)
    test = tiny_meta_dt["test"]  # 6 episodes (3 per held-out goal): use 4, one per lane
    starts = np.array([0, 5, 11, 17])  # 17 = the last full window of 20 steps
    rewards = np.asarray(test.rewards)[:4].copy()
    for lane, s0 in enumerate(starts):
        rewards[lane, s0 : s0 + 3] += 100.0
    obs = np.asarray(test.obs)[:4]
    final = np.asarray(test.final_obs)[:4]
    traj = {
        "obs": jnp.asarray(obs),
        "actions": jnp.asarray(test.actions)[:4],
        "rewards": jnp.asarray(rewards),
        "next_obs": jnp.asarray(np.concatenate([obs[:, 1:], final[:, None]], 1)),
        "valid": jnp.ones((4, 20)),
    }
    prompt = jax.jit(fns.self_guided_prompt)(traj, jax.random.PRNGKey(0))
    rows = np.arange(4)[:, None]
    idx = starts[:, None] + np.arange(3)
    np.testing.assert_array_equal(np.asarray(prompt.timesteps), idx)
    mean, std = np.asarray(state.obs_mean), np.asarray(state.obs_std)
    np.testing.assert_allclose(np.asarray(prompt.obs), (obs[rows, idx] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(prompt.actions), np.asarray(test.actions)[rows, idx])
    rtg = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1] / TINY_SCALE
    np.testing.assert_allclose(np.asarray(prompt.rtg), rtg[rows, idx], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(prompt.mask), 1.0)


def test_few_shot_is_a_zero_shot_episode_then_its_max_error_prompt(tiny_meta_dt):
    """PointRobot and the deterministic policy are deterministic, so the protocol can be
    replayed from its parts: a zero-shot episode per lane, its max-error segment as the prompt,
    a second episode with it. The harness's few-shot returns are that second episode's, and
    differ from zero-shot (the prompt is read); the task vector z the agent acted on at the end
    of its episode is the one training computes for the same history (same context window)."""
    trainer, state = tiny_meta_dt["trainer"], tiny_meta_dt["state"]
    agent = trainer.meta
    family = agent.family
    fns = _lanes(agent, state)

    def replay(key):
        run = lambda prompt: rollout(
            family, fns.params, key, fns.act, fns.observe, fns.initial_carry(prompt), 20
        )
        carry, first, zero = run(fns.empty_prompt())
        _, _, few = run(fns.self_guided_prompt(first, key))
        return carry["z"], first, zero, few

    z_acted, first, zero, few = jax.jit(replay)(jax.random.PRNGKey(5))
    harness = jax.jit(lambda s, k: agent.evaluate(s, k, "test", "few-shot", "meta-dt", 2))(
        state, jax.random.PRNGKey(1)
    )
    returns = np.asarray(harness["returns"])  # [2 tasks, 2 rounds x 2 lanes]
    assert returns.shape == (2, 4)
    per_lane = np.asarray(few).reshape(2, 2)
    np.testing.assert_allclose(returns, np.concatenate([per_lane, per_lane], 1), rtol=1e-5)
    assert np.abs(np.asarray(few) - np.asarray(zero)).max() > 1e-3
    # z of the last 4 steps (the DT's context) as training sees the same episode
    episodes = rollout_trajectories(jax.tree.map(np.asarray, first), 20)
    expected = meta_dt.task_vectors(trainer, state, episodes)[:, -4:]
    np.testing.assert_allclose(np.asarray(z_acted), np.asarray(expected), atol=1e-5)


def test_training_windows_carry_the_z_of_their_steps(tiny_meta_dt):
    """Each sampled window's task vectors are the frozen encoder's z of that episode at those
    timesteps (zero on padding), and every prompt comes from the window's own task."""
    trainer, state = tiny_meta_dt["trainer"], tiny_meta_dt["state"]
    data = trainer.data
    win, z, prompt = jax.jit(lambda k: trainer.internals.sample(k, data, 32, state))(
        jax.random.PRNGKey(3)
    )
    win, z, prompt = jax.tree.map(np.asarray, (win, z, prompt))
    obs, table = np.asarray(data.windows.obs), np.asarray(state.z_table)
    tasks = np.asarray(data.tasks)
    for b in range(32):
        real = win.mask[b] > 0
        t = win.timesteps[b][real]
        (episode,) = [e for e in range(obs.shape[0]) if np.allclose(obs[e, t], win.obs[b][real])]
        np.testing.assert_allclose(z[b][real], table[episode, t], atol=1e-6)
        assert not z[b][~real].any()
        p_real = prompt.mask[b] > 0
        if p_real.any():  # the prompt segment's states are a segment of a same-task episode
            pt = prompt.timesteps[b][p_real]
            match = lambda e: np.allclose(obs[e, pt], prompt.obs[b][p_real])  # noqa: B023
            same = [e for e in range(obs.shape[0]) if match(e)]
            assert same and all(tasks[e] == tasks[episode] for e in same)


def test_the_model_reads_z_at_its_step_and_a_masked_prompt_is_no_prompt(tiny_meta_dt):
    """z_t enters state token t: changing the task vector of the last step changes the last
    action and nothing before it (causal); a prompt whose mask is 0 (the warm-up) gives the
    same actions as no prompt at all, and a real prompt changes them."""
    trainer, state = tiny_meta_dt["trainer"], tiny_meta_dt["state"]
    model = trainer.internals.model
    sample = jax.jit(lambda k: trainer.internals.sample(k, trainer.data, 8, state))
    win, z, prompt = sample(jax.random.PRNGKey(4))
    win = win.replace(mask=np.ones(win.mask.shape, np.float32))  # every step real
    prompt = prompt.replace(mask=np.ones(prompt.mask.shape, np.float32))
    act = jax.jit(lambda z, prompt: model.apply(state.params, win, z, prompt).mean)
    base = np.asarray(act(z, prompt))
    moved = np.asarray(
        act(np.asarray(z) + (np.arange(z.shape[1]) == z.shape[1] - 1)[:, None], prompt)
    )
    np.testing.assert_allclose(moved[:, :-1], base[:, :-1], atol=1e-5)
    assert np.abs(moved[:, -1] - base[:, -1]).min() > 1e-4
    masked = prompt.replace(mask=np.zeros(prompt.mask.shape, np.float32))
    none = jax.jit(lambda z: model.apply(state.params, win, z, None).mean)(z)
    np.testing.assert_allclose(np.asarray(act(z, masked)), np.asarray(none), atol=1e-5)
    assert np.abs(base - np.asarray(none)).max() > 1e-4


def test_multitask_datasets_split_by_the_tasks_of_their_episodes(tmp_path):
    """Training reads the training tasks' episodes only; evaluation's references the held-out
    ones (tasks 0-3 train, 4-5 test), whatever order the episodes are stored in."""
    from seqrl.data import DatasetMeta, save_dataset

    family = PointRobot(num_train=4, num_test=2)
    traj, tasks = _random_multitask_data(family, 2)
    order = np.random.default_rng(0).permutation(len(tasks))
    traj = jax.tree.map(lambda x: np.asarray(x)[order], traj)
    space = family.action_space(family.default_params)
    info = {"episode_tasks": [int(t) for t in tasks[order]]}
    meta = DatasetMeta("meta/PointRobot", family.observation_space(None), space, info=info)
    path = save_dataset(tmp_path / "point-v0", traj, meta)
    for split, wanted in (("train", {0, 1, 2, 3}), ("test", {4, 5})):
        got, got_tasks, _ = load_meta_dataset(str(path), family, split)
        assert set(got_tasks.tolist()) == wanted and len(got_tasks) == 2 * len(wanted)
        for t in wanted:  # each episode arrives with its own task's rewards
            rows = np.flatnonzero(got_tasks == t)
            source = np.flatnonzero(tasks[order] == t)
            np.testing.assert_array_equal(
                np.asarray(got.rewards)[rows], np.asarray(traj.rewards)[source]
            )


def test_world_model_learns_and_its_z_tells_tasks_apart():
    """Random-action PointRobot episodes of 8 goals: rewards -||s' - g|| reveal the goal only
    through the context. After training, the loss is below half its start and the task
    vectors vary more between goals than within one (an untrained encoder: ratio about 1)."""
    family = PointRobot(num_train=6, num_test=2)
    traj, tasks = _random_multitask_data(family, 8)
    obs, act, rew = (jnp.asarray(x) for x in (traj.obs, traj.actions, traj.rewards))
    lengths = jnp.asarray(traj.lengths)
    nxt = jnp.concatenate([obs[:, 1:], obs[:, :1]], 1).at[:, -1].set(traj.final_obs)
    wmc = WorldModelConfig(
        horizon=4,
        latent_dim=8,
        gru_dim=32,
        hidden_dim=32,
        steps=300,
        batch_size=64,
        context_actions=False,
        context_next_state=True,
    )
    model = WorldModel(wmc, 2)
    episodes = jnp.arange(obs.shape[0])

    def train_and_encode(key):
        params, losses = train_world_model(model, key, obs, act, rew, nxt, lengths, episodes, wmc)

        def encode(o, a, r, s2):  # z at every step with a full context (t >= h)
            ctx = jax.vmap(lambda t: context_at(o, a, r, s2, t, 4))(jnp.arange(4, 20))
            return model.apply(params, ctx, method=WorldModel.encode)

        return losses, jax.vmap(encode)(obs, act, rew, nxt)

    losses, z = jax.tree.map(np.asarray, jax.jit(train_and_encode)(jax.random.PRNGKey(1)))
    assert losses[-50:].mean() < 0.5 * losses[:10].mean(), (losses[:10], losses[-50:])
    by_task = z.reshape(8, -1, 8)  # [goals, episodes x steps, latent]
    between = by_task.mean(1).var(0).mean()
    within = by_task.var(1).mean()
    assert between > 1.3 * within, (between, within)


def test_config_errors():
    for kwargs in (
        {"num_train": 0},
        {"num_test": -1},
        {"num_train": 2.5},
        {"episodes_per_trial": -1},
    ):
        with pytest.raises(UserError):
            make_raw("meta/PointRobot", **kwargs)
    with pytest.raises(ConfigError, match="task family"):
        cfg.load_config({"agent": "ppo", "env": "gymnax/CartPole-v1", "tasks": "train"})
    with pytest.raises(ConfigError, match="prompt_dataset"):
        cfg.load_config({**TINY, "meta": {"prompt": "expert"}})
    # Prompt-DT is a preset of meta_dt: configs and runs that name the former agent still load
    preset = cfg.load_config({**TINY, "agent": "prompt_dt", "prompt_dataset": "x", "meta": {}})
    assert preset.agent == "meta_dt" and not preset.meta.context and preset.meta.prompt == "expert"
    with pytest.raises(ConfigError, match="prompt_dataset"):
        cfg.load_config({**TINY, "agent": "prompt_dt"})
    # meta.target_return moved to dt.target_return: a run saved before (both keys written, the
    # DT's never read) keeps its target; null is the best return of the training data
    saved = {**TINY, "meta": {"target_return": None}, "dt": {**TINY["dt"], "target_return": 500.0}}
    assert cfg.load_config(saved).dt.target_return is None
    moved = cfg.load_config({**TINY, "meta": {"target_return": 3.0}})
    assert moved.dt.target_return == 3.0 and cfg.load_config(TINY).dt.target_return is None
    with pytest.raises(ConfigError, match="meta.prompt"):
        cfg.load_config({**TINY, "meta": {"prompt": "best"}})


def test_per_task_ppo_trains_one_learner_per_task():
    from seqrl.agents import ppo

    config = cfg.load_config(
        {
            "agent": "ppo",
            "env": "meta/PointRobot",
            "env_kwargs": {"num_train": 2, "num_test": 1},
            "tasks": "train",
            "num_envs": 8,
            "total_timesteps": 8 * 20 * 80,
            "ppo": {"num_steps": 20, "lr": 3e-3, "ent_coef": 0.0, "num_minibatches": 2},
            "network": {"hidden_sizes": [32, 32]},
        }
    )
    trainer = ppo.make_trainer(config)
    state, _ = jax.jit(ppo.make_train(config))(jax.random.PRNGKey(0))
    goals = np.asarray(PointRobot(num_train=2, num_test=1).split("train"))
    np.testing.assert_array_equal(np.asarray(state.env_params.tasks[:, 0]), goals)
    out = jax.jit(lambda s: trainer.evaluate(s, jax.random.PRNGKey(1), 8, True))(state)
    per_task = np.asarray(out["task_returns"]).mean(1)
    assert per_task.shape == (2,)
    # each learner learned its own goal: most of the way from random actions to the oracle
    refs = reference_returns(PointRobot(num_train=2, num_test=1), goals, jax.random.PRNGKey(2))
    score = (per_task - refs["random"]) / (refs["oracle"] - refs["random"])
    assert np.all(score > 0.6), (per_task, refs)


def test_inverse_square_root_of_a_rotated_ill_conditioned_matrix():
    # a = R diag(4, 1/100) R^T: a^(-1/2) = R diag(1/2, 10) R^T (R: rotation by 30 degrees)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[c, -s], [s, c]])
    a = rot @ np.diag([4.0, 0.01]) @ rot.T
    got = np.asarray(meta_dt.inverse_sqrt(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(got, rot @ np.diag([0.5, 10.0]) @ rot.T, rtol=1e-4, atol=1e-4)


def test_task_vectors_of_any_episodes_match_the_training_z(tiny_meta_dt):
    trainer, state = tiny_meta_dt["trainer"], tiny_meta_dt["state"]
    # the training episodes: exactly the z the DT was trained with
    z = meta_dt.task_vectors(trainer, state, tiny_meta_dt["train"])
    np.testing.assert_allclose(np.asarray(z), np.asarray(state.z_table), atol=1e-5)
    # whitened over the training steps (every tiny episode is 20 steps long): centered, and
    # multiplied by (C + 0.01 tr(C) I)^(-1/2) of the raw z's covariance C
    table = np.asarray(state.z_table, np.float64).reshape(-1, 16)
    np.testing.assert_allclose(table.mean(0), 0.0, atol=1e-4)
    norm = state.wm_params["z_norm"]
    whiten = np.asarray(norm["whiten"], np.float64)
    raw = table @ np.linalg.inv(whiten) + np.asarray(norm["shift"])
    var, vecs = np.linalg.eigh(np.cov(raw.T, bias=True))
    expected = (vecs / np.sqrt(var + 0.01 * var.sum())) @ vecs.T
    np.testing.assert_allclose(whiten, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    # so the whitened z's main directions have unit variance, however unequal they were raw
    white = np.linalg.eigvalsh(np.cov(table.T, bias=True))
    assert white.max() < 1.0 and white[-2:].min() > 0.8 and var[-1] / var[-2] > 1.5, (white, var)
    # held-out episodes: one z per step; step 0 has an empty context, the same for every task
    z_test = np.asarray(meta_dt.task_vectors(trainer, state, tiny_meta_dt["test"]))
    assert z_test.shape == (6, 20, 16) and np.all(np.isfinite(z_test))
    np.testing.assert_allclose(z_test[:, 0], np.broadcast_to(z_test[0, 0], (6, 16)), atol=1e-6)
    assert not np.allclose(z_test[0, 10], z_test[-1, 10])
    floor = cfg.load_config({**TINY, "meta": {"context": False, "prompt": "none"}})
    train_data = (tiny_meta_dt["train"], tiny_meta_dt["train_tasks"])
    floor_trainer = meta_dt.make_trainer(floor, train_data)
    with pytest.raises(UserError, match="no world model"):
        meta_dt.task_vectors(floor_trainer, state, tiny_meta_dt["test"])


def test_the_task_oracle_dt_reads_the_true_task_in_training_and_acting(tiny_meta_dt):
    """The control ``meta.oracle_task``: every training window's task vector is its episode's
    true goal (no world model is trained), and acting on held-out goals it reads each lane's
    own goal; the same setting with a world-model context is refused."""
    family = PointRobot(num_train=4, num_test=2)
    oracle = {**TINY, "meta": {"prompt_length": 3, "context": False, "oracle_task": True}}
    oracle["meta"]["prompt"] = "none"
    train = tiny_meta_dt["train_tasks"]
    trainer = meta_dt.make_trainer(
        cfg.load_config(oracle), (tiny_meta_dt["train"], np.asarray(train))
    )
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    assert state.wm_params is None
    win, z, _ = jax.jit(lambda k: trainer.internals.sample(k, trainer.data, 16, state))(
        jax.random.PRNGKey(1)
    )
    goals = np.asarray(family.split("all"))
    obs = np.asarray(trainer.data.windows.obs)
    for b in range(16):  # find each window's episode, then its goal
        real = np.asarray(win.mask[b]) > 0
        t = np.asarray(win.timesteps[b])[real]
        (episode,) = [e for e in range(obs.shape[0]) if np.allclose(obs[e, t], win.obs[b][real])]
        np.testing.assert_allclose(
            np.asarray(z[b])[real], goals[train[episode]][None].repeat(real.sum(), 0)
        )
    fns = trainer.meta.acting(state, "test", True, None)
    carry = fns.initial_carry(fns.empty_prompt())
    obs0 = jnp.zeros((4, 2))
    carry, _ = jax.jit(fns.act)(carry, obs0, jnp.ones(4, bool), jax.random.PRNGKey(2))
    np.testing.assert_allclose(np.asarray(carry["z"][:, -1]), np.repeat(goals[4:], 2, axis=0))
    with pytest.raises(ConfigError, match="oracle_task"):
        cfg.load_config({**TINY, "meta": {"oracle_task": True}})


def test_training_never_reads_a_held_out_tasks_data(tiny_meta_dt, tmp_path):
    """A dataset of every task, the held-out tasks' episodes poisoned (huge rewards, states far
    away): the Meta-DT trained from it, through the dataset path, is bit-identical to the one
    given the training tasks' episodes alone (world model, z table, DT, state statistics)."""
    from seqrl.data import DatasetMeta, save_dataset

    family = PointRobot(num_train=4, num_test=2)
    traj, tasks = _random_multitask_data(family, 3)
    held_out = tasks >= 4
    poison = lambda x, v: np.where(held_out.reshape(-1, *[1] * (x.ndim - 1)), v, np.asarray(x))
    traj = traj.replace(
        rewards=poison(traj.rewards, 1e4),
        obs=poison(traj.obs, 500.0),
        final_obs=poison(traj.final_obs, 500.0),
    )
    space = family.action_space(family.default_params)
    meta = DatasetMeta(
        "meta/PointRobot",
        family.observation_space(None),
        space,
        info={"episode_tasks": [int(t) for t in tasks]},
    )
    path = save_dataset(tmp_path / "poisoned-v0", traj, meta)
    trainer = meta_dt.make_trainer(cfg.load_config({**TINY, "dataset": str(path)}))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    assert np.asarray(trainer.data.tasks).max() == 3
    got, want = jax.tree.leaves(state), jax.tree.leaves(tiny_meta_dt["state"])
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_scripted_opening_and_z_frozen_after_it(tiny_meta_dt, tmp_path):
    """``meta.opening`` + ``world_model.freeze_at``: acting, every lane's first actions are
    exactly the opening, then the DT's; z stops moving at step T, in the training z table and
    online alike (the online z is the offline one of the agent's own episodes); an opening that
    does not fit the actions, or is not the dataset's, is a config error naming the key."""
    from seqrl.data import DatasetMeta, save_dataset

    opening = [[1.0, 0.0], [0.0, -1.0]]
    frozen = {**TINY, "meta": {"prompt_length": 3, "opening": opening}}
    frozen["world_model"] = {**TINY["world_model"], "freeze_at": 2}
    data = (tiny_meta_dt["train"], tiny_meta_dt["train_tasks"])
    trainer = meta_dt.make_trainer(cfg.load_config(frozen), data)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    table = np.asarray(state.z_table)
    np.testing.assert_array_equal(table[:, 2:], np.broadcast_to(table[:, 2:3], table[:, 2:].shape))
    assert not np.allclose(table[:, 1], table[:, 2])
    family = trainer.meta.family
    fns = _lanes(trainer.meta, state)
    carry = fns.initial_carry(fns.empty_prompt())
    run = jax.jit(lambda key: rollout(family, fns.params, key, fns.act, fns.observe, carry, 20))
    final, traj, _ = run(jax.random.PRNGKey(3))
    actions = np.asarray(traj["actions"])
    np.testing.assert_array_equal(actions[:, :2], np.broadcast_to(opening, (4, 2, 2)))
    assert not np.allclose(actions[:, 2], opening[-1])
    z_online = np.asarray(final["z"])  # the last K = 4 steps' z: all z_2
    np.testing.assert_array_equal(z_online, np.broadcast_to(z_online[:, :1], z_online.shape))
    own = rollout_trajectories(traj, 20)
    z_offline = np.asarray(meta_dt.task_vectors(trainer, state, own))
    np.testing.assert_allclose(z_online, z_offline[:, -4:], atol=1e-6)
    with pytest.raises(ConfigError, match=r"'meta.opening': opening: each action must have sha"):
        meta_dt.make_trainer(cfg.load_config({**frozen, "meta": {"opening": [[1.0]]}}), data)
    space = family.action_space(family.default_params)
    info = {"episode_tasks": [int(t) for t in data[1]], "opening": [[0.5, 0.5]]}
    meta = DatasetMeta("meta/PointRobot", family.observation_space(None), space, info=info)
    path = save_dataset(tmp_path / "probe-v0", data[0], meta)
    with pytest.raises(ConfigError, match=r"'meta.opening': .* is not the opening of dataset"):
        meta_dt.make_trainer(cfg.load_config({**frozen, "dataset": str(path)}))


def test_prompt_dropout_leaves_that_share_of_windows_without_a_prompt(tiny_meta_dt):
    """``meta.prompt_dropout``: after the warmup, the share of training windows whose prompt is
    masked out (none at 0, all at 1, about half at 0.5); during the warmup every one is."""
    data = (tiny_meta_dt["train"], tiny_meta_dt["train_tasks"])
    state = tiny_meta_dt["state"]
    for dropout, lo, hi in ((0.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.4, 0.6)):
        meta = {"prompt_length": 3, "prompt_dropout": dropout, "prompt_warmup": 2}
        trainer = meta_dt.make_trainer(cfg.load_config({**TINY, "meta": meta}), data)
        sample = jax.jit(lambda k, s, t=trainer: t.internals.sample(k, t.data, 512, s))
        _, _, prompt = sample(jax.random.PRNGKey(0), state.replace(update_step=jnp.asarray(2)))
        prompted = np.asarray(prompt.mask).max(1)
        assert set(np.unique(prompted)) <= {0.0, 1.0}
        assert lo <= prompted.mean() <= hi, (dropout, prompted.mean())
        _, _, warm = sample(jax.random.PRNGKey(0), state.replace(update_step=jnp.asarray(1)))
        assert np.asarray(warm.mask).max() == 0.0


PROBE = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]


def _probe_then_random_data(family, per_task: int):
    """Episodes of every task: the scripted probe, then uniformly random actions (behaviour
    that says nothing about the goal), task-major."""
    space = family.action_space(family.default_params)
    probe = jnp.asarray(PROBE)

    def act(t, obs, first, key):
        t = jnp.where(first, 0, t)
        random = jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))
        scripted = probe[jnp.minimum(t, len(PROBE) - 1)]
        return t + 1, jnp.where((t < len(PROBE))[:, None], scripted, random)

    params = lane_params(family, family.split("all"), per_task)
    n = (family.num_train + family.num_test) * per_task
    steps = jnp.zeros(n, jnp.int32)
    run = jax.jit(lambda key: rollout(family, params, key, act, lambda c, *_: c, steps, 20))
    _, traj, _ = run(jax.random.PRNGKey(0))
    tasks = np.repeat(np.arange(family.num_train + family.num_test), per_task)
    return rollout_trajectories(traj, 20), tasks


def test_z_read_from_the_probe_locates_held_out_goals():
    """A tiny Meta-DT (the trainer's own init: world model with task decoding, z frozen after a
    3-step probe, standardized) on 40 training goals' episodes, each the probe then random
    actions: a linear probe from z (at the episode's last step) to the goal, fitted on the
    training goals, reads the 10 held-out goals with R^2 >= 0.8. The later, random part of the
    episode carries no goal, so an encoder that read it (z not frozen) or a context that missed
    the probe's rewards would fail here."""
    family = PointRobot(num_train=40, num_test=10)
    traj, tasks = _probe_then_random_data(family, 3)
    pick = lambda rows: jax.tree.map(lambda x: np.asarray(x)[rows], traj)
    train = tasks < 40
    config = {
        **TINY,
        "env_kwargs": {"num_train": 40, "num_test": 10},
        "meta": {"prompt": "none", "opening": PROBE},
        "world_model": {
            "horizon": 3,
            "freeze_at": 3,
            "decode": "task",
            "latent_dim": 16,
            "gru_dim": 64,
            "hidden_dim": 32,
            "steps": 400,
            "batch_size": 64,
            "context_actions": False,
            "context_next_state": True,
        },
    }
    trainer = meta_dt.make_trainer(cfg.load_config(config), (pick(train), tasks[train]))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    goals = np.asarray(family.split("all"))
    encode = jax.jit(lambda t: meta_dt.task_vectors(trainer, state, t)[:, -1])
    z_train, z_test = np.asarray(encode(pick(train))), np.asarray(encode(pick(~train)))
    design = lambda z: np.c_[z, np.ones(len(z))]
    weights, *_ = np.linalg.lstsq(design(z_train), goals[tasks[train]], rcond=None)
    truth = goals[tasks[~train]]
    residual = ((design(z_test) @ weights - truth) ** 2).sum()
    r2 = 1 - residual / ((truth - truth.mean(0)) ** 2).sum()
    assert r2 >= 0.8, r2
