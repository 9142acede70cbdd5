"""Offline datasets: our Minari writer -> Minari's tools -> our loader is exact; datasets made with
Minari's own DataCollector load; broken datasets fail with one line naming the file and field."""

import json
import pickle

import gymnasium as gym
import h5py
import jax
import numpy as np
import pytest

from seqrl.data import (
    DatasetMeta,
    Trajectories,
    check_output_path,
    load_dataset,
    save_dataset,
)
from seqrl.envs.spaces import Box, Discrete
from seqrl.errors import UserError


def make_trajectories(action_space, lengths=(6, 2, 5), obs_shape=(3,), seed=0):
    """Random episodes padded with zeros after each length."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, np.int32)
    n, max_len = len(lengths), int(lengths.max())
    mask = np.arange(max_len)[None] < lengths[:, None]

    def padded(x):
        return x * mask.reshape(mask.shape + (1,) * (x.ndim - 2)).astype(x.dtype)

    if isinstance(action_space, Discrete):
        actions = rng.integers(0, action_space.n, (n, max_len)).astype(np.int32)
    else:
        actions = rng.uniform(-1, 1, (n, max_len, *action_space.shape)).astype(np.float32)
    last = np.arange(max_len)[None] == lengths[:, None] - 1
    return Trajectories(
        obs=padded(rng.normal(size=(n, max_len, *obs_shape)).astype(np.float32)),
        actions=padded(actions),
        rewards=padded(rng.normal(size=(n, max_len)).astype(np.float32)),
        terminated=last & (np.arange(n)[:, None] % 2 == 0),
        truncated=last & (np.arange(n)[:, None] % 2 == 1),
        lengths=lengths,
        final_obs=rng.normal(size=(n, *obs_shape)).astype(np.float32),
    )


SPACES = {
    "discrete": Discrete(4),
    "continuous": Box.make(-1.0, 1.0, (2,)),
}


@pytest.fixture
def minari_home(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_round_trip_through_minari_is_exact(kind, minari_home):
    import minari

    space = SPACES[kind]
    traj = make_trajectories(space)
    meta = DatasetMeta(
        "gymnax/CartPole-v1", Box.make(-5.0, 5.0, (3,)), space, info={"quality": "expert"}
    )
    path = save_dataset(
        minari_home / "toy-v0", traj, meta, episode_metadata=[{"checkpoint": 7}] * 3
    )
    assert sorted(p.name for p in minari_home.iterdir()) == ["toy-v0"]  # no temp dir left

    # Minari's own tools list and read it
    assert "toy-v0" in minari.list_local_datasets()
    dataset = minari.load_dataset("toy-v0")
    assert dataset.total_episodes == 3 and dataset.total_steps == 13
    for i, episode in enumerate(dataset.iterate_episodes()):
        k = int(traj.lengths[i])
        np.testing.assert_array_equal(
            episode.observations, np.concatenate([traj.obs[i, :k], traj.final_obs[i][None]])
        )
        np.testing.assert_array_equal(episode.actions, traj.actions[i, :k])
        np.testing.assert_array_equal(episode.rewards, traj.rewards[i, :k])
        np.testing.assert_array_equal(episode.terminations, traj.terminated[i, :k])
        np.testing.assert_array_equal(episode.truncations, traj.truncated[i, :k])
    episode_meta = list(dataset.storage.get_episode_metadata([0]))[0]
    assert episode_meta["checkpoint"] == 7

    # and ours reads it back exactly, by path or by id
    for where in (path, "toy-v0"):
        loaded, loaded_meta = load_dataset(where)
        for field in traj.__dataclass_fields__:
            a, b = getattr(traj, field), getattr(loaded, field)
            assert np.asarray(b).dtype == np.asarray(a).dtype, field
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=field)
        assert isinstance(loaded.obs, jax.Array)
        assert loaded_meta == meta
        assert loaded_meta.info["quality"] == "expert"
    np.testing.assert_allclose(
        np.asarray(loaded.returns),
        [traj.rewards[i, : traj.lengths[i]].sum() for i in range(3)],
        rtol=1e-6,
    )
    assert loaded_meta.action_kind == kind
    assert loaded_meta.action_size == (4 if kind == "discrete" else 2)


def test_dataset_made_with_minaris_data_collector_loads(minari_home):
    from minari import DataCollector

    env = DataCollector(gym.make("CartPole-v1"))
    env.action_space.seed(0)
    lengths, returns = [], []
    for episode in range(4):
        env.reset(seed=episode)
        done, steps, total = False, 0, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            done, steps, total = terminated or truncated, steps + 1, total + reward
        lengths.append(steps)
        returns.append(total)
    with pytest.warns(UserWarning):  # minari asks for an author, permalink...
        env.create_dataset("tests/cartpole-random-v0", algorithm_name="random")

    traj, meta = load_dataset("tests/cartpole-random-v0")
    assert meta.env == "gymnasium/CartPole-v1"
    assert meta.obs_shape == (4,) and meta.action_space == Discrete(2)
    assert traj.obs.shape == (4, max(lengths), 4) and traj.obs.dtype == np.float32
    assert traj.actions.shape == (4, max(lengths)) and traj.actions.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(traj.lengths), lengths)
    np.testing.assert_array_equal(np.asarray(traj.returns), returns)
    np.testing.assert_array_equal(np.asarray(traj.terminated.sum(axis=1)), 1)  # random fails
    assert not np.asarray(traj.obs[0, lengths[0] :]).any()  # zero padding
    same, _ = load_dataset(minari_home / "tests" / "cartpole-random-v0" / "data")
    np.testing.assert_array_equal(np.asarray(same.obs), np.asarray(traj.obs))


# ---------------------------------------------------------------------------------------------
# Broken datasets: one line naming the file and the field
# ---------------------------------------------------------------------------------------------


def _write(tmp_path):
    traj = make_trajectories(Discrete(4))
    meta = DatasetMeta("toy", Box.make(-5.0, 5.0, (3,)), Discrete(4))
    path = save_dataset(tmp_path / "toy-v0", traj, meta)
    return path, path / "data" / "main_data.hdf5", path / "data" / "metadata.json"


def _edit_metadata(meta_file, **changes):
    metadata = json.loads(meta_file.read_text())
    metadata.update(changes)
    meta_file.write_text(json.dumps(metadata))


def _replace(h5_file, name, data):
    with h5py.File(h5_file, "a") as f:
        del f[name]
        if data is not None:
            f[name] = data


def _break_shape(h5, meta):
    _replace(h5, "episode_1/observations", np.zeros((3, 5), np.float32))


def _break_missing(h5, meta):
    _replace(h5, "episode_0/rewards", None)


def _break_nan(h5, meta):
    _replace(h5, "episode_2/rewards", np.array([0, 1, np.nan, 0, 0], np.float32))


def _break_dtype(h5, meta):
    _replace(h5, "episode_1/actions", np.array([1, 2], np.int64))


def _break_empty(h5, meta):
    with h5py.File(h5, "a") as f:
        for name in list(f):
            del f[name]
    _edit_metadata(meta, total_episodes=0)


def _break_space(h5, meta):
    space = {"type": "Dict", "subspaces": {}}
    _edit_metadata(meta, observation_space=json.dumps(space))


def _break_pickle(h5, meta):
    blob = pickle.dumps({"a": 1})
    _replace(h5, "episode_0/actions", np.frombuffer(blob, np.dtype((np.void, len(blob)))))


def _break_strings(h5, meta):
    _replace(h5, "episode_0/rewards", np.array([b"1", b"2"], dtype=h5py.string_dtype()))


def _break_action_range(h5, meta):
    _replace(h5, "episode_1/actions", np.array([1, 9], np.int32))


def _break_format(h5, meta):
    _edit_metadata(meta, data_format="arrow")


def _break_json(h5, meta):
    meta.write_text("{not json")


def _break_count(h5, meta):
    _edit_metadata(meta, total_episodes=5)


@pytest.mark.parametrize(
    "breaker, where, message",
    [
        (
            _break_shape,
            "main_data.hdf5: episode_1/observations",
            "has shape (3, 5), expected (3, 3)",
        ),
        (_break_missing, "main_data.hdf5: episode_0/rewards", "field is missing"),
        (_break_nan, "main_data.hdf5: episode_2/rewards", "holds NaN or inf (first at step 2)"),
        (_break_dtype, "main_data.hdf5: episode_1/actions", "dtype int64 but episode_0 has int32"),
        (_break_empty, "main_data.hdf5", "holds no episodes"),
        (_break_space, "metadata.json", "field 'observation_space' is a Dict space"),
        (_break_pickle, "main_data.hdf5: episode_0/actions", "expected numbers or booleans"),
        (_break_strings, "main_data.hdf5: episode_0/rewards", "expected numbers or booleans"),
        (_break_action_range, "main_data.hdf5: episode_1/actions", "outside [0, 4)"),
        (_break_format, "metadata.json", "'data_format' is 'arrow'"),
        (_break_json, "metadata.json", "not valid JSON"),
        (_break_count, "metadata.json", "'total_episodes' is 5 but main_data.hdf5 holds 3"),
    ],
)
def test_broken_datasets_are_one_line_errors(tmp_path, breaker, where, message):
    path, h5_file, meta_file = _write(tmp_path)
    breaker(h5_file, meta_file)
    with pytest.raises(UserError) as info:
        load_dataset(path)
    text = str(info.value)
    assert "\n" not in text and str(path / "data") in text, text
    assert where in text and message in text, text


def test_missing_and_foreign_paths(tmp_path, minari_home):
    with pytest.raises(UserError, match="dataset not found: nowhere-v0"):
        load_dataset("nowhere-v0")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="plain is not a Minari dataset"):
        load_dataset(tmp_path / "plain")


def test_output_path_checks(tmp_path):
    with pytest.raises(UserError, match=r"NAME-vVERSION \(e.g. expert-v0\)"):
        check_output_path(tmp_path / "expert")
    full = tmp_path / "full-v0"
    full.mkdir()
    (full / "x").write_text("")
    with pytest.raises(UserError, match="already exists and is not an empty directory"):
        check_output_path(full)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the dataset into"):
        check_output_path(blocker / "d-v0")
    empty = tmp_path / "empty-v0"
    empty.mkdir()
    assert check_output_path(empty) == empty  # an empty directory is fine
    meta = DatasetMeta("toy", Box.make(-5.0, 5.0, (3,)), Discrete(4))
    save_dataset(empty, make_trajectories(Discrete(4)), meta)
    assert load_dataset(empty)[0].num_episodes == 3


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    def fail(self, episodes):
        raise OSError("disk full")

    monkeypatch.setattr(HDF5Storage, "update_episodes", fail)
    traj = make_trajectories(Discrete(4))
    meta = DatasetMeta("toy", Box.make(-5.0, 5.0, (3,)), Discrete(4))
    with pytest.raises(OSError, match="disk full"):
        save_dataset(tmp_path / "toy-v0", traj, meta)
    assert list(tmp_path.iterdir()) == []
