"""`seqrl collect`: a tiny trained PPO run rolled out on device into Minari datasets of expert,
medium and mixed quality; the episodes match the env's own accounting; bad inputs exit 2."""

import json
import re
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqrl
from seqrl import config as cfg
from seqrl.cli import main
from seqrl.collection import collect, medium_choice, open_run, rollout, selection_key
from seqrl.data import load_dataset
from seqrl.envs import make_raw
from seqrl.loop import run

CARTPOLE = "configs/ppo/cartpole.yaml"
# 4 envs x 32 steps, 16 updates in 4 chunks: checkpoints at updates 4, 8, 12 and 16
TINY = [
    "total_timesteps=2048",
    "ppo.num_steps=32",
    "loop.num_chunks=4",
    "loop.eval_episodes=2",
    "loop.tensorboard=false",
]


pytestmark = pytest.mark.xdist_group("collect")  # one worker trains the fixture's run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("collect") / "run"
    run(cfg.load_config(CARTPOLE, TINY), run_dir=path, progress=False, log=lambda _: None)
    return path


def _episode_attrs(path: Path, name: str) -> list:
    with h5py.File(path / "data" / "main_data.hdf5", "r") as f:
        return [f[f"episode_{i}"].attrs[name].item() for i in range(len(f))]


def _episode_checkpoints(path: Path) -> list[int]:
    return [int(c) for c in _episode_attrs(path, "checkpoint")]


def test_rollout_matches_the_envs_own_returns_and_lengths(run_dir):
    r = open_run(run_dir)
    assert r.steps == [4, 8, 12, 16]
    fn = jax.jit(lambda s, k: rollout(r.trainer.actor, s, k, 8, 500))
    traj, env_returns = jax.tree.map(np.asarray, fn(r.state(16), jax.random.PRNGKey(3)))
    n, lengths = 8, traj.lengths
    assert traj.obs.shape == (n, 500, 4) and traj.actions.shape == (n, 500)
    np.testing.assert_array_equal(traj.returns, env_returns)  # EpisodeStatistics agrees
    np.testing.assert_array_equal(traj.returns, lengths)  # CartPole pays 1 per step
    mask = np.arange(500)[None] < lengths[:, None]
    ends = np.arange(500)[None] == lengths[:, None] - 1
    np.testing.assert_array_equal(traj.terminated | traj.truncated, ends)
    assert not traj.obs[~mask].any() and not traj.actions[~mask].any()
    assert not traj.rewards[~mask].any()
    assert set(np.unique(traj.actions[mask])) <= {0, 1}
    # each action is paired with the observation it was chosen on: an episode's first is a
    # reset's (CartPole draws every coordinate from [-0.05, 0.05]; one push moves the cart's
    # velocity by about 0.2)
    assert np.abs(traj.obs[:, 0]).max() <= 0.05
    # the final observation is where the pole fell: outside the observation of any earlier step
    assert not np.array_equal(traj.final_obs, traj.obs[np.arange(n), lengths - 1])

    # epsilon = 1: every action uniformly random, whatever the (deterministic) policy says
    noisy = jax.jit(lambda s, k: rollout(r.trainer.actor, s, k, 8, 500, 1.0, deterministic=True))
    traj, _ = jax.tree.map(np.asarray, noisy(r.state(16), jax.random.PRNGKey(3)))
    actions = traj.actions[np.arange(500)[None] < traj.lengths[:, None]]
    assert len(actions) > 60 and 0.3 < actions.mean() < 0.7


def test_expert_dataset_round_trips_through_minari(run_dir, tmp_path, monkeypatch, capsys):
    import minari

    out = tmp_path / "datasets" / "cartpole-expert-v0"
    result = collect(run_dir, 7, out, seed=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("collected 7 episodes, ") and "(expert: expert 16)" in lines[-2]
    assert lines[-1] == f"dataset: {out}"

    traj, meta = result.trajectories, result.meta
    assert traj.num_episodes == 7 and traj.max_length == int(traj.lengths.max())
    info = meta.info
    assert info["quality"] == "expert" and info["checkpoints"] == {"expert": 16}
    assert info["run_dir"] == str(Path(run_dir).absolute()) and info["noise"] == 0.0
    returns = np.asarray(traj.returns)
    assert info["return_mean"] == pytest.approx(returns.mean())
    assert info["return_max"] == returns.max() and info["num_steps"] == returns.sum()
    assert _episode_checkpoints(out) == [16] * 7

    loaded, loaded_meta = load_dataset(out)
    for field in traj.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(loaded, field), getattr(traj, field), field)
    assert loaded_meta == meta and loaded_meta.info == {
        **json.loads(json.dumps(info)),
        "dataset_id": "cartpole-expert-v0",
    }

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out.parent))
    dataset = minari.load_dataset("cartpole-expert-v0")
    assert dataset.total_episodes == 7 and dataset.total_steps == int(returns.sum())
    stored = minari.list_local_datasets()["cartpole-expert-v0"]
    assert stored["seqrl"]["info"]["quality"] == "expert"


def test_medium_rule_by_hand():
    assert medium_choice([4, 8, 12, 16], [10.0, 30.0, 60.0, 100.0], 20.0) == (12, 60.0)
    # negative rewards: halfway from a random -1200 to the latest -200 is -700
    assert medium_choice([1, 2, 3, 4], [-1100.0, -650.0, -300.0, -200.0], -1200.0) == (2, -700.0)
    assert medium_choice([1, 2, 3], [40.0, 60.0, 100.0], 0.0) == (1, 50.0)  # a tie: the earlier
    assert medium_choice([1, 2], [500.0, 20.0], 20.0) == (1, 20.0)  # never the latest itself


def _random_cartpole_returns(episodes: int = 512) -> np.ndarray:
    """Uniformly random actions in CartPole, stepped here (not through seqrl's evaluation)."""
    env = make_raw("gymnax/CartPole-v1")
    params = env.default_params

    def episode(key):
        obs, state = env.reset(key, params)

        def step(carry, key):
            state, alive, total = carry
            k_act, k_step = jax.random.split(key)
            action = jax.random.randint(k_act, (), 0, 2)
            _, state, reward, term, trunc, _ = env.step(k_step, state, action, params)
            return (state, alive & ~(term | trunc), total + reward * alive), None

        carry = (state, jnp.bool_(True), jnp.float32(0.0))
        return jax.lax.scan(step, carry, jax.random.split(key, 500))[0][2]

    keys = jax.random.split(jax.random.PRNGKey(11), episodes)
    return np.asarray(jax.jit(jax.vmap(episode))(keys))


def test_medium_and_mixed_choose_checkpoints(run_dir, tmp_path, capsys):
    mixed = collect(run_dir, 10, tmp_path / "mixed-v0", quality="mixed").meta.info
    evidence = mixed["medium_selection"]
    # the returns behind the choice, recomputed from each checkpoint as seqrl.load restores it
    steps = [4, 8, 12, 16]
    policies = [seqrl.load(run_dir, step) for step in steps]
    trainer = policies[0].trainer
    evaluate = jax.jit(lambda s: trainer.evaluate(s, selection_key(0), 16, True)["returns"])
    measured = [float(np.nanmean(evaluate(p.seed_state(0)))) for p in policies]
    recorded = [evidence["checkpoint_returns"][str(s)] for s in steps]
    np.testing.assert_allclose(recorded, measured, atol=1e-4)
    # the random policy's return: close to an independent estimate from 512 episodes
    random = _random_cartpole_returns()
    assert abs(evidence["random_return"] - random.mean()) < 4 * random.std() / np.sqrt(16)
    chosen, target = medium_choice(steps, measured, evidence["random_return"])
    assert evidence["target_return"] == pytest.approx(target, abs=1e-4)
    assert mixed["checkpoints"] == {"medium": chosen, "expert": 16}
    assert mixed["episodes_per_checkpoint"] == {"medium": 7, "expert": 3}
    assert mixed["mixture"] == "70% medium + 30% expert"
    assert _episode_checkpoints(tmp_path / "mixed-v0") == [chosen] * 7 + [16] * 3
    assert f"medium: checkpoint {chosen} " in capsys.readouterr().out

    # an explicit checkpoint replaces the choice; noise is recorded
    medium = collect(
        run_dir, 7, tmp_path / "medium-v0", quality="medium", checkpoint=8, noise=0.5
    ).meta.info
    assert medium["checkpoints"] == {"medium": 8} and "medium_selection" not in medium
    assert medium["noise"] == 0.5
    assert _episode_checkpoints(tmp_path / "medium-v0") == [8] * 7


def test_cli_collect(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["collect", "--help"])
    assert info.value.code == 0
    out = tmp_path / "cli-v0"
    argv = ["collect", str(run_dir), "--episodes", "7", "-o", str(out), "--checkpoint", "12"]
    assert main(argv) == 0
    assert f"dataset: {out}" in capsys.readouterr().out
    assert _episode_checkpoints(out) == [12] * 7
    # several noise levels: the episodes cycle through them, each recording its own
    out = tmp_path / "levels-v0"
    argv = ["collect", str(run_dir), "--episodes", "5", "-o", str(out), "--noise", "0,0.5"]
    assert main(argv) == 0
    assert _episode_attrs(out, "noise") == [0.0, 0.5, 0.0, 0.5, 0.0]
    assert load_dataset(out)[1].info["noise"] == [0.0, 0.5]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--episodes", "0"], "argument --episodes: expected a positive integer, got '0'"),
        (["--noise", "-1"], "argument --noise: expected a finite number >= 0, got '-1'"),
        (["--noise", "1.5"], "noise is an epsilon for discrete actions: must be <= 1"),
        (["--noise", "0,1.5"], "noise is an epsilon for discrete actions: must be <= 1, got 1.5"),
        (["--noise", "0,x"], "argument --noise: expected a number >= 0, got 'x'"),
        (["--opening", "1;a"], "argument --opening: expected actions like 1,0;0,1"),
        (["--opening", "1;0"], "opening: scripted opening actions need a continuous action"),
        (["--checkpoint", "5"], "has no checkpoint 5; kept: 4, 8, 12, 16"),
        (["--quality", "great"], "argument --quality: invalid choice: 'great'"),
        (["-o", "{tmp}/full-v0"], "already exists and is not an empty directory"),
        (["-o", "{tmp}/file/d-v0"], "cannot write the dataset into"),
        (["-o", "{tmp}/expert"], "must be a Minari dataset id NAME-vVERSION"),
        (["{tmp}/no-run"], "no-run is not a run directory"),
    ],
)
def test_cli_collect_errors_are_one_line_exit_2(run_dir, tmp_path, capsys, argv, message):
    (tmp_path / "full-v0").mkdir()
    (tmp_path / "full-v0" / "x").write_text("")
    (tmp_path / "file").write_text("")
    defaults = {"RUN_DIR": str(run_dir), "--episodes": "3", "-o": str(tmp_path / "ok-v0")}
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if len(argv) == 1:  # a different RUN_DIR
        defaults["RUN_DIR"] = argv.pop()
    options = dict(zip(argv[::2], argv[1::2]))
    full = ["collect", defaults.pop("RUN_DIR")]
    for key, value in {**defaults, **options}.items():
        full += [key, value]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqrl: error: "), err
    assert message in err, err
    assert not (tmp_path / "ok-v0").exists()


def test_continuous_noise_is_clipped_and_long_episodes_are_cut():
    """An untrained Pendulum policy with large Gaussian noise: actions stay in [-2, 2]; the
    50-step cap (below the env's 200) ends every episode truncated at its last step."""
    config = cfg.load_config(CARTPOLE, ["env=gymnax/Pendulum-v1", *TINY])
    trainer = cfg.agent_module("ppo").make_trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    fn = jax.jit(lambda s, k: rollout(trainer.actor, s, k, 4, 50, noise=5.0))
    traj, env_returns = jax.tree.map(np.asarray, fn(state, jax.random.PRNGKey(1)))
    assert traj.actions.shape == (4, 50, 1) and traj.actions.dtype == np.float32
    assert np.abs(traj.actions).max() == 2.0 and (np.abs(traj.actions) == 2.0).mean() > 0.3
    np.testing.assert_array_equal(traj.lengths, 50)
    assert traj.truncated[:, -1].all() and not traj.truncated[:, :-1].any()
    assert np.isnan(env_returns).all()  # the env itself never saw these episodes end
    assert np.isfinite(traj.final_obs).all() and traj.final_obs.any()


def test_per_env_noise_and_a_scripted_opening():
    """Deterministic untrained Pendulum policy, noise 0 on lanes 0-1 and 5 on lanes 2-3, a
    two-action opening: every lane starts with exactly the opening (noise or not); then the
    noiseless lanes act in the open interval and the noisy ones often hit the bounds; a bad
    opening is a one-line error naming it."""
    from seqrl.collection import check_opening
    from seqrl.envs.spaces import Box
    from seqrl.errors import UserError

    config = cfg.load_config(CARTPOLE, ["env=gymnax/Pendulum-v1", *TINY])
    trainer = cfg.agent_module("ppo").make_trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    noise, opening = jnp.array([0.0, 0.0, 5.0, 5.0]), [[1.5], [-0.5]]
    fn = jax.jit(lambda s, k: rollout(trainer.actor, s, k, 4, 30, noise, True, opening)[0])
    actions = np.asarray(fn(state, jax.random.PRNGKey(1)).actions)[..., 0]
    np.testing.assert_array_equal(actions[:, :2], [[1.5, -0.5]] * 4)
    assert np.abs(actions[:2, 2:]).max() < 2.0
    assert (np.abs(actions[2:, 2:]) == 2.0).mean() > 0.3
    space = Box.make(-1.0, 1.0, (2,))
    assert check_opening([], space) is None
    for bad, message in (
        ([[0.5]], "each action must have shape (2,), got (1,)"),
        ([[0.5, 1.5]], "actions must lie in the action space"),
        ([[0.5, 0.5], [0.5]], "every action must have the same length"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            check_opening(bad, space)


def test_a_goal_conditioned_learner_is_collected_on_every_task_without_its_goal(tmp_path):
    """PPO over PointRobot's training goals with the goal appended to its observations
    (``env_kwargs.observe_task``): collect runs it on every goal of the family, records each
    episode's goal index, and never the goal itself. Checked by hand: every reward is
    ``-||s' - g||`` for the goal the episode's index names, and the recorded observations are
    the 2-D positions alone."""
    from seqrl.envs.meta import PointRobot, make_family
    from seqrl.errors import UserError

    kwargs = {"num_train": 6, "num_test": 3}
    path = tmp_path / "run"
    overrides = ["tasks=none", "total_timesteps=320", "loop.num_chunks=1", "loop.tensorboard=false"]
    overrides += [f"env_kwargs.{k}={v}" for k, v in kwargs.items()] + [
        "env_kwargs.observe_task=true"
    ]
    config = cfg.load_config("configs/meta/point_robot/ppo_per_task.yaml", overrides)
    run(config, run_dir=path, progress=False, log=lambda _: None)
    assert open_run(path).observed_task_width == 2
    out = collect(path, 2, tmp_path / "gc-v0", noise=(0.0, 1.0), log=lambda _: None).path

    data, meta = load_dataset(str(out))
    info = meta.info
    assert info["goal_conditioned"] and info["task_split"] == "all"
    assert info["env_kwargs"] == kwargs  # no offline agent is told to observe the task
    np.testing.assert_array_equal(info["episode_tasks"], np.repeat(np.arange(9), 2))
    obs, final = np.asarray(data.obs), np.asarray(data.final_obs)
    assert obs.shape == (18, 20, 2) and meta.observation_space.shape == (2,)
    goals = np.asarray(PointRobot(**kwargs).split("all"))[info["episode_tasks"]]
    after = np.concatenate([obs[:, 1:], final[:, None]], axis=1)  # s' of every step
    expected = -np.linalg.norm(after - goals[:, None], axis=-1)
    np.testing.assert_allclose(np.asarray(data.rewards), expected, atol=1e-5)
    with pytest.raises(UserError, match="observe_task"):
        make_family("PointRobot", observe_task="yes")
