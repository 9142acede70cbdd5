"""Task families beyond PointRobot: the brax locomotion families' task rewards and Meta-World
ML1 through the host-side adapter (scripted data, the offline agents trained on it, and the
evaluation harness stepping MuJoCo from Python)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqrl
from seqrl.cli import main
from seqrl.collection import collect_scripted
from seqrl.data import load_dataset
from seqrl.envs import is_host, make_raw, make_vec, names
from seqrl.envs.meta import AntDir, CheetahDir, CheetahVel, HopperParam, WalkerParam
from seqrl.errors import UserError

# -- brax locomotion families (rewards checked without compiling brax physics) -----------------


def test_cheetah_vel_reward_is_minus_speed_error_minus_control_cost():
    family = CheetahVel()
    action = jnp.array([0.5, -1.0, 0.0, 0.2, 0.0, 0.1])
    r = family.task_reward(jnp.float32(2.0), {"x_velocity": jnp.float32(1.25)}, action)
    assert float(r) == pytest.approx(-0.75 - 0.05 * (0.25 + 1.0 + 0.04 + 0.01), abs=1e-6)
    train, test = np.asarray(family.split("train")), np.asarray(family.split("test"))
    assert train.shape == (35,) and test.shape == (5,)
    assert np.all((train >= 0) & (train <= 3)) and not set(train) & set(test)
    np.testing.assert_array_equal(test, np.asarray(CheetahVel().split("test")))


def test_cheetah_dir_has_both_directions_and_ant_dir_projects_velocity():
    cheetah = CheetahDir()
    np.testing.assert_array_equal(np.asarray(cheetah.split("train")), [1.0, -1.0])
    assert np.asarray(cheetah.split("test")).shape == (0,)
    a = jnp.zeros(6)
    assert float(cheetah.task_reward(jnp.float32(-1.0), {"x_velocity": 2.0}, a)) == -2.0
    ant = AntDir()
    metrics = {"x_velocity": 0.3, "y_velocity": 2.0, "reward_survive": 1.0}
    up = float(ant.task_reward(jnp.float32(math.pi / 2), metrics, jnp.full(8, 0.1)))
    assert up == pytest.approx(2.0 + 1.0 - 0.5 * 8 * 0.01, abs=1e-5)
    assert np.asarray(ant.split("test")).shape == (5,)


def test_body_param_families_scale_the_brax_system():
    for family, links in ((HopperParam(), 4), (WalkerParam(), 7)):
        tasks = family.split("all")
        assert tasks["mass"].shape == (50, links)
        for name, base in (("mass", 1.5), ("inertia", 1.5), ("friction", 1.5), ("damping", 1.3)):
            log = np.log(np.asarray(tasks[name])) / np.log(base)
            assert log.min() >= -3 - 1e-5 and log.max() <= 3 + 1e-5 and log.std() > 1
        task = jax.tree.map(lambda x: x[7], tasks)
        sys, default = family.task_system(task), family.brax.env.sys
        np.testing.assert_allclose(sys.link.inertia.mass, default.link.inertia.mass * task["mass"])
        np.testing.assert_allclose(
            sys.link.inertia.i[:, 0, 0], default.link.inertia.i[:, 0, 0] * task["inertia"]
        )
        np.testing.assert_allclose(
            sys.geom_friction, default.geom_friction * task["friction"][:, None]
        )
        np.testing.assert_allclose(sys.dof.damping, default.dof.damping * task["damping"])
        # the step runs in the task's system and restores the body's own afterwards
        env = make_vec(family.name, 2)
        obs, state = jax.eval_shape(env.reset, jax.random.key(0), env.default_params)
        jax.eval_shape(
            env.step,
            jax.random.key(1),
            state,
            jnp.zeros((2, family.action_space(None).shape[0])),
            env.default_params,
        )
        assert family.brax.env.sys is default


def test_locomotion_families_have_their_bodies_spaces():
    """The bodies' sizes (by hand); their reset and step are traced against the env contract
    in tests/test_envs.py (test_contract_shapes_and_dtypes, every meta/ brax body)."""
    for name, obs_dim, act_dim in (("meta/CheetahVel", 17, 6), ("meta/AntDir", 27, 8)):
        env = make_vec(name, 2)
        params = env.default_params
        assert env.observation_space(params).shape == (obs_dim,)
        assert env.action_space(params).shape == (act_dim,)


# -- Meta-World ML1 through the host-side adapter ----------------------------------------------

ML1 = {"num_train": 2, "num_test": 1, "episode_length": 12}


pytestmark = pytest.mark.xdist_group("meta-families")  # one worker collects the ML1 data


def test_ml1_is_a_host_family_with_disjoint_hidden_goals():
    assert "meta/ML1-reach" in names() and is_host("meta/ML1-reach")
    family = make_raw("meta/ML1-reach", **ML1)
    assert family.host  # the registry and the object agree
    assert not is_host("meta/PointRobot") and not getattr(make_raw("meta/PointRobot"), "host", 0)
    np.testing.assert_array_equal(np.asarray(family.split("train")), [0, 1])
    np.testing.assert_array_equal(np.asarray(family.split("test")), [2])
    goals = np.stack([family.goal(i) for i in range(3)])  # where each hidden goal is
    assert goals.shape == (3, 3) and np.isfinite(goals).all()
    gaps = np.linalg.norm(goals[:2] - goals[2], axis=1)  # the held-out goal vs the training ones
    assert gaps.min() > 0.01, gaps
    assert np.linalg.norm(goals[0] - goals[1]) > 0.01
    np.testing.assert_array_equal(family.goal(2), goals[2])  # the same goal every time
    with pytest.raises(UserError, match="stepped on the host"):
        make_vec("meta/ML1-reach", 2)  # PPO cannot put it inside the jitted loop
    with pytest.raises(UserError, match="at most 500"):
        make_raw("meta/ML1-reach", episode_length=501)


def test_ml1_ppo_is_a_one_line_error(capsys):
    assert main(["train", "configs/ppo/cartpole.yaml", "env=meta/ML1-reach"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stepped on the host" in err


@pytest.fixture(scope="module")
def ml1_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml1")
    paths = {}
    for quality in ("medium", "expert"):
        paths[quality] = collect_scripted(
            "meta/ML1-reach",
            2,
            root / f"reach-{quality}-v0",
            quality=quality,
            env_kwargs=ML1,
            log=lambda _: None,
        ).path
    return paths


def test_scripted_collection_tags_tasks_and_noise_orders_quality(ml1_data):
    traj, meta = load_dataset(ml1_data["expert"])
    assert traj.obs.shape == (6, 12, 39) and traj.actions.shape == (6, 12, 4)
    assert meta.info["episode_tasks"] == [0, 1, 2, 0, 1, 2]
    assert np.all(np.asarray(traj.obs)[..., 36:39] == 0)  # ML1 hides the goal
    assert np.all(np.abs(np.asarray(traj.actions)) <= 1)
    medium, _ = load_dataset(ml1_data["medium"])
    # the scripted policy with little noise earns more than with a lot, on every task
    assert np.asarray(traj.returns).mean() > np.asarray(medium.returns).mean()


@pytest.mark.slow
def test_meta_dt_trains_on_ml1_and_is_evaluated_on_the_host(ml1_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    seqrl.train(
        "configs/meta/ml1_reach/meta_dt.yaml",
        run_dir=run_dir,
        progress=False,
        **{
            "env_kwargs": ML1,
            "dataset": str(ml1_data["medium"]),
            "prompt_dataset": str(ml1_data["expert"]),
            "num_seeds": 1,
            "num_envs": 1,
            "total_updates": 2,
            "dt.context": 4,
            "dt.embed_dim": 16,
            "dt.num_layers": 1,
            "dt.batch_size": 4,
            "dt.max_timestep": 12,
            "dt.warmup_steps": 1,
            "meta.prompt_length": 3,
            "meta.prompt_warmup": 1,
            "world_model.steps": 2,
            "world_model.batch_size": 8,
            "loop.num_chunks": 1,
            "loop.eval_episodes": 1,
        },
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_episodes"] == 1 and np.isfinite(summary["final_return_mean"])
    capsys.readouterr()
    assert main(["eval-meta", str(run_dir), "--mode", "few-shot", "--rounds", "1"]) == 0
    result = json.loads((run_dir / "eval_meta_few-shot_test.json").read_text())
    assert result["episodes_per_task"] == 1 and len(result["per_task_return"]) == 1
    assert result["oracle"].startswith("scripted policy")
    # the normalized score is (R - R_random) / (R_oracle - R_random) of the reported returns;
    # the references were stepped on the host for the held-out goal (finite, not placeholders)
    r, lo, hi = result["per_task_return"][0], result["random_return"][0], result["oracle_return"][0]
    assert np.isfinite([r, lo, hi]).all() and hi != lo
    assert result["normalized_mean"] == pytest.approx((r - lo) / (hi - lo))
    assert result["return_mean"] == pytest.approx(r)  # one seed, one task


def test_ml10_holds_out_whole_kinds_of_manipulation():
    family = make_raw("meta/ML10", tasks_per_class=1, episode_length=20)  # builds ML10: ~35 s
    assert (family.num_train, family.num_test) == (10, 5) and is_host("meta/ML10")
    train = {family.task(i).env_name for i in range(10)}
    test = {family.task(i).env_name for i in range(10, 15)}
    assert len(train) == 10 and len(test) == 5 and not train & test
    tasks = np.asarray(family.split("test"))
    _, traj, returns = family.rollout(tasks, jax.random.PRNGKey(0), ("scripted", 0.0), None, None)
    assert traj["obs"].shape == (5, 20, 39) and np.all(traj["obs"][..., 36:39] == 0)
    # every held-out kind ran its own env for all 20 steps, and the returns are its rewards'
    assert traj["valid"].all() and np.isfinite(returns).all()
    np.testing.assert_allclose(returns, traj["rewards"].sum(1), rtol=1e-6)
    assert len({tuple(np.round(traj["obs"][i, 0, :3], 4)) for i in range(5)}) > 1


def test_scripted_collection_refuses_options_it_would_ignore(tmp_path, capsys):
    base = ["collect", "meta/ML1-reach", "--episodes", "1", "-o", str(tmp_path / "d-v0")]
    for extra, words in (
        (["--quality", "mixed", "--noise", "0.2"], "--quality mixed"),
        (["--checkpoint", "3"], "trained runs only"),
        (["--deterministic"], "trained runs only"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err
    assert not (tmp_path / "d-v0").exists()
