"""Offline datasets: Minari interop and padded, device-resident trajectories.

A dataset on disk is a Minari dataset (HDF5 backend): a directory ``DATASET`` named like a Minari
dataset id, ``NAME-vVERSION``, holding ``data/metadata.json`` and ``data/main_data.hdf5``.
Minari's own tools read it once pointed at the parent directory; for ``datasets/cartpole-v0``::

    MINARI_DATASETS_PATH=datasets minari list local
    MINARI_DATASETS_PATH=datasets python -c "import minari; minari.load_dataset('cartpole-v0')"
    minari.MinariDataset("datasets/cartpole-v0/data")  # in Python, without the variable

In memory a dataset is a :class:`Trajectories` pytree of fixed-shape arrays ``[N, L, ...]``
(episodes padded with zeros up to the longest one) plus a :class:`DatasetMeta` of static facts
(env name, spaces, provenance), so a jitted sampler never recompiles and never leaves the device.

:func:`load_dataset` reads any Minari HDF5 dataset with Box or Discrete spaces, including ones
made with Minari's ``DataCollector`` from gymnasium envs. It parses ``metadata.json`` with
``json`` and reads only numeric HDF5 datasets with ``h5py``: nothing is ever unpickled, and the
env recorded in the metadata is never built (Minari would ``gym.make`` its ``env_spec``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqrl.envs.spaces import Box, Discrete, Space
from seqrl.errors import UserError
from seqrl.files import checksum, ensure_writable_dir

METADATA_FILE = "metadata.json"
DATA_FILE = "main_data.hdf5"
FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
# a Minari dataset id without namespace: NAME-vVERSION (minari.dataset.minari_dataset)
_DATASET_NAME = re.compile(r"[-\w]+-v\d+")


@struct.dataclass
class Trajectories:
    """``N`` episodes padded to ``L`` steps; steps ``t >= lengths[i]`` of episode ``i`` are zeros.

    ``obs[i, t]`` is the observation the agent acted on at step ``t``; ``final_obs[i]`` is the one
    the last step led to (Minari stores it as observation ``L_i``; world models need it as s').
    """

    obs: jax.Array  # [N, L, *obs_shape] float32
    actions: jax.Array  # [N, L] int32 (discrete) or [N, L, *act_shape] float32 (continuous)
    rewards: jax.Array  # [N, L] float32
    terminated: jax.Array  # [N, L] bool
    truncated: jax.Array  # [N, L] bool
    lengths: jax.Array  # [N] int32, valid steps per episode
    final_obs: jax.Array | None = None  # [N, *obs_shape] float32

    @property
    def num_episodes(self) -> int:
        return self.lengths.shape[0]

    @property
    def max_length(self) -> int:
        return self.rewards.shape[1]

    @property
    def mask(self) -> jax.Array:
        """``[N, L]`` True on valid (non-padding) steps."""
        return jnp.arange(self.max_length)[None, :] < self.lengths[:, None]

    @property
    def returns(self) -> jax.Array:
        """``[N]`` undiscounted return of each episode."""
        return jnp.where(self.mask, self.rewards, 0.0).sum(axis=1)

    @property
    def num_steps(self) -> int:
        return int(jnp.sum(self.lengths))

    def return_stats(self) -> dict[str, float]:
        r = np.asarray(self.returns, np.float64)
        return {
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
        }


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    """Static facts about a dataset. ``env`` is a seqrl env name for datasets seqrl collected
    (``gymnax/CartPole-v1``), ``gymnasium/<id>`` for datasets made from a gymnasium env, else the
    dataset id. ``info`` is free JSON provenance (run dir, checkpoints, quality, returns...)."""

    env: str
    observation_space: Box
    action_space: Space
    info: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape)

    @property
    def action_kind(self) -> str:
        return "discrete" if isinstance(self.action_space, Discrete) else "continuous"

    @property
    def action_size(self) -> int:
        """Number of actions (discrete) or action dimensions (continuous)."""
        if isinstance(self.action_space, Discrete):
            return self.action_space.n
        return math.prod(self.action_space.shape)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def check_output_path(path: str | Path) -> Path:
    """Checks ``path`` can receive a new dataset (before any work is done); returns it.

    Its name must be a Minari dataset id (``NAME-vVERSION``); it must not exist or be an empty
    directory; its parent must be writable (it is created if missing).
    """
    path = Path(path)
    if not _DATASET_NAME.fullmatch(path.name):
        stem = re.sub(r"[^-\w]", "_", path.name) or "dataset"
        raise UserError(
            f"output {path}: the directory name must be a Minari dataset id NAME-vVERSION "
            f"(e.g. {stem}-v0), so that minari.load_dataset finds it"
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"output {path} already exists and is not an empty directory")
    parent = path.absolute().parent
    ensure_writable_dir(parent, f"cannot write the dataset into {parent}")
    return path


def _to_gymnasium(space: Space):
    import gymnasium

    if isinstance(space, Discrete):
        return gymnasium.spaces.Discrete(space.n)
    low = np.asarray(space.low, np.float32)
    high = np.asarray(space.high, np.float32)
    return gymnasium.spaces.Box(low=low, high=high, shape=tuple(space.shape), dtype=np.float32)


def save_dataset(
    path: str | Path,
    trajectories: Trajectories,
    meta: DatasetMeta,
    *,
    episode_metadata: list[dict] | None = None,
    description: str | None = None,
) -> Path:
    """Writes ``trajectories`` as a Minari dataset (HDF5) at ``path``, atomically.

    The dataset is written into a hidden sibling directory and renamed onto ``path`` when
    complete, so ``path`` never holds half a dataset. ``meta.env`` and ``meta.info`` go into
    ``metadata.json`` under the key ``"seqrl"``; ``episode_metadata`` (one dict per episode)
    into the episodes' HDF5 attributes. Returns ``path``.
    """
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = check_output_path(path)
    if trajectories.final_obs is None:
        raise ValueError("save_dataset needs trajectories.final_obs (Minari stores L+1 obs)")
    t = jax.tree.map(np.asarray, trajectories)
    n = t.lengths.shape[0]
    if episode_metadata is not None and len(episode_metadata) != n:
        raise ValueError(f"{len(episode_metadata)} episode_metadata entries for {n} episodes")
    tmp = path.absolute().parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        storage = MinariStorage.new(
            tmp / "data",
            observation_space=_to_gymnasium(meta.observation_space),
            action_space=_to_gymnasium(meta.action_space),
            data_format="hdf5",
            jpeg_encoding=False,
        )
        storage.update_metadata(
            {
                "dataset_id": path.name,
                "minari_version": minari.__version__,
                "algorithm_name": str(meta.info.get("algorithm", "seqrl")),
                "description": description or f"{meta.env}, written by seqrl",
                "seqrl": {"env": meta.env, "info": meta.info},
            }
        )
        episodes = []
        for i in range(n):
            length = int(t.lengths[i])
            episodes.append(
                EpisodeBuffer(
                    observations=np.concatenate([t.obs[i, :length], t.final_obs[i][None]]),
                    actions=t.actions[i, :length],
                    rewards=t.rewards[i, :length],
                    terminations=t.terminated[i, :length],
                    truncations=t.truncated[i, :length],
                )
            )
        storage.update_episodes(episodes)
        if episode_metadata is not None:
            storage.update_episode_metadata(episode_metadata)
        # HDF5 checksums only its metadata: a CRC-32 of the arrays as stored catches the rest
        stored = _read_episodes(tmp / "data" / DATA_FILE, n)
        own = {"env": meta.env, "info": meta.info, "checksum": _checksum(stored)}
        storage.update_metadata({"seqrl": own})
        os.replace(tmp, path)  # replaces an empty directory too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def minari_root() -> Path:
    """Where Minari keeps datasets: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def resolve_dataset(path: str | Path) -> Path:
    """The ``data`` directory of a dataset given as its directory, its ``data`` directory, or a
    Minari dataset id under :func:`minari_root` (``"D4RL/door/human-v2"``)."""
    p = Path(path)
    for candidate in (p / "data", p):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    if p.exists():
        raise UserError(f"{p} is not a Minari dataset (no data/{METADATA_FILE} in it)")
    if not p.is_absolute():
        by_id = minari_root() / p / "data"
        if (by_id / METADATA_FILE).is_file():
            return by_id
    raise UserError(
        f"dataset not found: {path} (neither a directory nor a dataset id in {minari_root()})"
    )


def _parse_space(metadata: dict, key: str, where: Path, jpeg: bool) -> tuple[Space, dict]:
    """(seqrl space, the raw description) of ``metadata[key]`` (Minari stores a JSON string)."""
    raw = metadata.get(key)
    if raw is None:
        raise UserError(f"{where}: field '{key}' is missing (seqrl does not build the env)")
    try:
        d = json.loads(raw) if isinstance(raw, str) else raw
        kind = d["type"]
    except (json.JSONDecodeError, TypeError, KeyError):
        raise UserError(f"{where}: field '{key}' is not a Minari space description") from None
    try:
        if kind == "Discrete":
            n, start = int(d["n"]), int(d.get("start", 0))
            if key == "observation_space":  # an index, observed as one number (like gymnax)
                return Box.make(start, start + n - 1, ()), d
            return Discrete(n), d
        if kind == "Box":
            shape = tuple(int(s) for s in d["shape"])
            dtype = np.dtype(d["dtype"])
            if dtype.kind not in "biuf":
                raise UserError(f"{where}: field '{key}' has dtype {dtype} (expected numbers)")
            low = np.asarray(d["low"], np.float64)
            high = np.asarray(d["high"], np.float64)
            image = (
                len(shape) in (2, 3)
                and shape[0] >= 32
                and shape[1] >= 32
                and dtype == np.uint8
                and np.all(low == 0)
                and np.all(high == 255)
            )
            if image and jpeg:
                raise UserError(
                    f"{where}: field '{key}' holds JPEG-encoded images, which seqrl does not "
                    "read (write the dataset with jpeg_encoding=False)"
                )
            return Box.make(low, high, shape), d
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: field '{key}' is a malformed {kind} space ({e})") from None
    raise UserError(
        f"{where}: field '{key}' is a {kind} space; seqrl reads Box and Discrete spaces"
    )


def _read_field(group: Any, name: str, where: str) -> np.ndarray:
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        raise UserError(f"{where}/{name}: field is missing")
    if not isinstance(link, h5py.HardLink):
        raise UserError(f"{where}/{name}: is a link to other data (refused)")
    obj = group[name]
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{where}/{name}: is a group (nested Dict/Tuple spaces are not supported)")
    if obj.dtype.kind not in "biuf":  # opaque, compound, object and string data are refused
        raise UserError(f"{where}/{name}: has dtype {obj.dtype} (expected numbers or booleans)")
    return np.asarray(obj[()])


def load_dataset(path: str | Path) -> tuple[Trajectories, DatasetMeta]:
    """Reads a Minari HDF5 dataset into padded device arrays (see :func:`resolve_dataset` for
    what ``path`` may be). Any problem is a one-line ``UserError`` naming the file and field."""
    data_dir = resolve_dataset(path)
    meta_file = data_dir / METADATA_FILE
    try:
        metadata = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_file}: not valid JSON ({e})") from None
    except OSError as e:
        raise UserError(f"{meta_file}: cannot be read ({e.strerror})") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{meta_file}: not a Minari metadata object")
    data_format = metadata.get("data_format", "hdf5")
    if data_format != "hdf5":
        raise UserError(
            f"{meta_file}: field 'data_format' is {data_format!r}; seqrl reads Minari's hdf5 format"
        )
    jpeg = bool(metadata.get("jpeg_encoding", True))
    obs_space, _ = _parse_space(metadata, "observation_space", meta_file, jpeg)
    act_space, act_raw = _parse_space(metadata, "action_space", meta_file, jpeg)
    act_start = int(act_raw.get("start", 0)) if isinstance(act_space, Discrete) else 0

    data_file = data_dir / DATA_FILE
    expected = metadata.get("total_episodes")
    stored = _read_episodes(data_file, expected if isinstance(expected, int) else None)
    episodes = [
        _check_episode(ep, f"{data_file}: {name}", obs_space, act_space, act_start)
        for name, ep in stored
    ]
    own = metadata.get("seqrl")
    crc = own.get("checksum") if isinstance(own, dict) else None
    if crc is not None and crc != _checksum(stored):  # valid, yet not the data seqrl wrote
        raise UserError(
            f"{data_file}: damaged: its arrays do not match the checksum in {METADATA_FILE}"
        )

    lengths = np.array([len(ep["rewards"]) for ep in episodes], np.int32)
    n, max_len = len(episodes), int(lengths.max())
    act_dtype = np.int32 if isinstance(act_space, Discrete) else np.float32
    obs = np.zeros((n, max_len, *obs_space.shape), np.float32)
    actions = np.zeros((n, max_len, *act_space.shape), act_dtype)
    rewards = np.zeros((n, max_len), np.float32)
    terminated = np.zeros((n, max_len), bool)
    truncated = np.zeros((n, max_len), bool)
    final_obs = np.zeros((n, *obs_space.shape), np.float32)
    for i, ep in enumerate(episodes):
        k = lengths[i]
        obs[i, :k] = ep["observations"][:k]
        final_obs[i] = ep["observations"][k]
        actions[i, :k] = ep["actions"]
        rewards[i, :k] = ep["rewards"]
        terminated[i, :k] = ep["terminations"]
        truncated[i, :k] = ep["truncations"]
    trajectories = Trajectories(
        obs=jnp.asarray(obs),
        actions=jnp.asarray(actions),
        rewards=jnp.asarray(rewards),
        terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        lengths=jnp.asarray(lengths),
        final_obs=jnp.asarray(final_obs),
    )
    return trajectories, DatasetMeta(
        env=_env_name(metadata, data_dir),
        observation_space=obs_space,
        action_space=act_space,
        info=_info(metadata, data_dir, act_start),
    )


def _read_episodes(data_file: Path, expected: int | None) -> list[tuple[str, dict]]:
    """``(name, {field: array as stored})`` for every episode of a Minari HDF5 file, in order.
    ``expected``: the number of episodes ``metadata.json`` announces."""
    import h5py

    if not data_file.is_file():
        raise UserError(f"{data_file}: file is missing")
    try:
        f = h5py.File(data_file, "r")
    except OSError as e:
        raise UserError(f"{data_file}: not a readable HDF5 file ({e})") from None
    episodes = []
    try:
        with f:
            names = [k for k in f if re.fullmatch(r"episode_\d+", k)]
            names.sort(key=lambda k: int(k.split("_")[1]))
            if not names:
                raise UserError(f"{data_file}: holds no episodes")
            if expected is not None and expected != len(names):
                raise UserError(
                    f"{data_file.parent / METADATA_FILE}: field 'total_episodes' is {expected} "
                    f"but {data_file.name} holds {len(names)} episodes"
                )
            first_dtypes: dict[str, tuple[np.dtype, str]] = {}
            for name in names:
                where = f"{data_file}: {name}"
                group = f[name]
                if not isinstance(group, h5py.Group):
                    raise UserError(f"{where}: is not a group of fields")
                ep = {field: _read_field(group, field, where) for field in FIELDS}
                for field, x in ep.items():
                    seen = first_dtypes.setdefault(field, (x.dtype, name))
                    if x.dtype != seen[0]:
                        raise UserError(
                            f"{where}/{field}: has dtype {x.dtype} but {seen[1]} has {seen[0]}"
                        )
                episodes.append((name, ep))
    except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py on damaged bytes
        msg = str(e.args[0] if e.args else type(e).__name__).splitlines()[0]
        raise UserError(f"{data_file}: damaged HDF5 file ({msg[:200]})") from None
    return episodes


def _checksum(episodes: list[tuple[str, dict]]) -> str:
    return checksum([[ep[field] for field in FIELDS] for _, ep in episodes])


def _check_episode(
    ep: dict[str, np.ndarray], where: str, obs_space: Box, act_space: Space, act_start: int
) -> dict[str, np.ndarray]:
    """Shapes against the spaces, finiteness, discrete action range; returns converted arrays."""
    rewards = ep["rewards"]
    if rewards.ndim != 1 or rewards.shape[0] < 1:
        raise UserError(
            f"{where}/rewards: has shape {rewards.shape}, expected (steps,) with steps >= 1"
        )
    steps = rewards.shape[0]
    expected = {
        "observations": (steps + 1, *obs_space.shape),
        "actions": (steps, *act_space.shape),
        "terminations": (steps,),
        "truncations": (steps,),
    }
    for field, shape in expected.items():
        if ep[field].shape != shape:
            note = " (Minari stores steps + 1 observations)" if field == "observations" else ""
            raise UserError(f"{where}/{field}: has shape {ep[field].shape}, expected {shape}{note}")
    out = {
        "observations": ep["observations"].astype(np.float32),
        "rewards": rewards.astype(np.float32),
        "terminations": ep["terminations"].astype(bool),
        "truncations": ep["truncations"].astype(bool),
    }
    actions = ep["actions"]
    if isinstance(act_space, Discrete):
        if actions.dtype.kind not in "iu":
            raise UserError(f"{where}/actions: has dtype {actions.dtype}, expected integers")
        low, high = act_start, act_start + act_space.n
        bad = (actions < low) | (actions >= high)
        if bad.any():
            step = int(np.argmax(bad))
            raise UserError(
                f"{where}/actions: action {actions[step]} at step {step} is outside [{low}, {high})"
            )
        out["actions"] = (actions - act_start).astype(np.int32)
    else:
        out["actions"] = actions.astype(np.float32)
    for field in ("observations", "actions", "rewards"):
        finite = np.isfinite(out[field]).reshape(out[field].shape[0], -1).all(axis=1)
        if not finite.all():
            raise UserError(
                f"{where}/{field}: holds NaN or inf (first at step {int(np.argmin(finite))})"
            )
    return out


def _env_name(metadata: dict, data_dir: Path) -> str:
    own = metadata.get("seqrl")
    if isinstance(own, dict) and isinstance(own.get("env"), str):
        return own["env"]
    spec = metadata.get("env_spec")
    if isinstance(spec, str):
        try:
            env_id = json.loads(spec).get("id")
        except (json.JSONDecodeError, AttributeError):
            env_id = None
        if isinstance(env_id, str):
            return f"gymnasium/{env_id}"
    return str(metadata.get("dataset_id") or data_dir.parent.name)


def _info(metadata: dict, data_dir: Path, act_start: int) -> dict:
    own = metadata.get("seqrl")
    info = dict(own.get("info", {})) if isinstance(own, dict) else {}
    info.setdefault("dataset_id", metadata.get("dataset_id", data_dir.parent.name))
    if act_start:
        info["action_start"] = act_start  # actions were shifted to 0..n-1
    return info


# ---------------------------------------------------------------------------------------------
# Multi-task datasets (task families)
# ---------------------------------------------------------------------------------------------


def episode_tasks(meta, path: str) -> np.ndarray:
    """The task of each episode of a multi-task dataset (global indices into the family's
    ``split("all")``)."""
    tasks = meta.info.get("episode_tasks")
    if tasks is None:
        raise UserError(
            f"dataset {path}: its episodes carry no task (info 'episode_tasks'); collect it from "
            "a per-task PPO run (config key 'tasks')"
        )
    return np.asarray(tasks, np.int64)


def load_meta_dataset(path: str, family, split: str):
    """(trajectories of the ``split`` tasks' episodes, their global task indices)."""
    traj, meta = load_dataset(path)
    tasks = episode_tasks(meta, path)
    lo, hi = (0, family.num_train) if split == "train" else (family.num_train, None)
    hi = family.num_train + family.num_test if hi is None else hi
    keep = np.nonzero((tasks >= lo) & (tasks < hi))[0]
    if keep.size == 0:
        raise UserError(f"dataset {path} holds no episode of a {split} task")
    traj = jax.tree.map(lambda x: np.asarray(x)[keep], traj)
    return traj, tasks[keep], meta


def rollout_trajectories(traj: dict, length: int):
    """A :func:`seqrl.evaluate.lane_rollout`'s (or a host family's) ``traj`` dict as padded
    ``seqrl.data.Trajectories``: steps after an episode's end zeroed, an episode that stopped
    before ``length`` (the family's time limit) terminated, one that reached it truncated."""
    valid = jnp.asarray(traj["valid"])
    lengths = valid.sum(1).astype(jnp.int32)
    last = jnp.arange(valid.shape[1])[None] == (lengths - 1)[:, None]
    pad = lambda x: jnp.asarray(x) * valid.reshape(valid.shape + (1,) * (jnp.ndim(x) - 2))
    return Trajectories(
        obs=pad(traj["obs"]),
        actions=pad(traj["actions"]),
        rewards=pad(traj["rewards"]),
        terminated=last & (lengths < length)[:, None],
        truncated=last & (lengths == length)[:, None],
        lengths=lengths,
        final_obs=jnp.asarray(traj["next_obs"])[jnp.arange(lengths.shape[0]), lengths - 1],
    )


__all__ = [
    "DatasetMeta",
    "Trajectories",
    "check_output_path",
    "episode_tasks",
    "load_dataset",
    "load_meta_dataset",
    "minari_root",
    "resolve_dataset",
    "rollout_trajectories",
    "save_dataset",
]
