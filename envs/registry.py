"""Names -> environments: ``make("gymnax/CartPole-v1")``, ``make("brax/ant")``."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from seqrl.envs.core import (
    AutoReset,
    ClipAction,
    Environment,
    EpisodeStatistics,
    NormalizeObservation,
    NormalizeReward,
    VecEnv,
)
from seqrl.errors import ConfigError, UserError

# gymnax ids that work offline (MNISTBandit downloads its data when made).
GYMNAX_IDS = (
    "CartPole-v1",
    "Pendulum-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Asterix-MinAtar",
    "Breakout-MinAtar",
    "Freeway-MinAtar",
    "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar",
    "Catch-bsuite",
    "DeepSea-bsuite",
    "MemoryChain-bsuite",
    "UmbrellaChain-bsuite",
    "DiscountingChain-bsuite",
    "SimpleBandit-bsuite",
    "FourRooms-misc",
    "MetaMaze-misc",
    "PointRobot-misc",
    "BernoulliBandit-misc",
    "GaussianBandit-misc",
    "Reacher-misc",
    "Swimmer-misc",
    "Pong-misc",
    "FrozenLake-misc",
)
BRAX_IDS = (
    "ant",
    "fast",
    "halfcheetah",
    "hopper",
    "humanoid",
    "humanoidstandup",
    "inverted_pendulum",
    "inverted_double_pendulum",
    "pusher",
    "reacher",
    "walker2d",
)  # swimmer is left out: it needs brax's generalized backend, whose step breaks on jax 0.10

# in-context meta-RL: a random projection of observations and actions per trial
INCONTEXT_IDS = ("gymnax/CartPole-v1", "gymnax/Acrobot-v1", "gymnax/Pendulum-v1")

_REGISTRY: dict[str, Callable[..., Environment]] = {}
_HOST: set[str] = set()  # names registered with host=True


def register(name: str, factory: Callable[..., Environment], *, host: bool = False) -> None:
    """Registers ``factory(**kwargs) -> raw Environment`` under ``name`` ("family/Id").
    ``host``: the env is stepped on the host (its objects say so too: ``env.host``)."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = factory
    if host:
        _HOST.add(name)


def _gymnax_factory(env_id: str) -> Callable[..., Environment]:
    def factory(**kwargs):
        from seqrl.envs.gymnax import make_gymnax

        return make_gymnax(env_id, **kwargs)

    return factory


def _brax_factory(env_id: str) -> Callable[..., Environment]:
    def factory(**kwargs):
        from seqrl.envs.brax import BraxEnv

        return BraxEnv(env_id, **kwargs)

    return factory


for _id in GYMNAX_IDS:
    register(f"gymnax/{_id}", _gymnax_factory(_id))
for _id in BRAX_IDS:
    register(f"brax/{_id}", _brax_factory(_id))


def _incontext_factory(inner: str) -> Callable[..., Environment]:
    def factory(**kwargs):
        from seqrl.envs.incontext import InContextProjection

        return InContextProjection(make_raw(inner), **kwargs)

    return factory


for _id in INCONTEXT_IDS:
    register(f"incontext/{_id.split('/')[-1]}", _incontext_factory(_id))


def _meta_factory(family: str) -> Callable[..., Environment]:
    def factory(**kwargs):
        from seqrl.envs.meta import make_family

        return make_family(family, **kwargs)

    return factory


# meta-RL task families (params carry the task; fixed train/test splits)
META_IDS = ("PointRobot", "CheetahVel", "CheetahDir", "AntDir", "HopperParam", "WalkerParam")
for _id in META_IDS:
    register(f"meta/{_id}", _meta_factory(_id))


def _metaworld_factory(env_name: str) -> Callable[..., Any]:
    def factory(**kwargs):
        from seqrl.envs.meta.metaworld import MetaWorldFamily

        return MetaWorldFamily(env_name=env_name, **kwargs)

    return factory


# Meta-World ML1 through a host-side adapter (MuJoCo stepped from Python; offline agents only)
HOST_IDS = ("reach", "push", "pick-place")
for _id in HOST_IDS:
    register(f"meta/ML1-{_id}", _metaworld_factory(f"{_id}-v3"), host=True)


def _metaworld_benchmark_factory(benchmark: str) -> Callable[..., Any]:
    def factory(**kwargs):
        from seqrl.envs.meta.metaworld import MetaWorldFamily

        return MetaWorldFamily(benchmark=benchmark, **kwargs)

    return factory


for _bench in ("ML10", "ML45"):
    register(f"meta/{_bench}", _metaworld_benchmark_factory(_bench), host=True)


def _probe_factory(probe: str) -> Callable[..., Environment]:
    def factory(**kwargs):
        from seqrl.envs.probes import PROBES

        return PROBES[probe](**kwargs)

    return factory


# tiny tasks with known best returns, to check what an agent learns (envs/probes.py)
PROBE_IDS = ("Recall-v0", "MatchCue-v0", "Target-v0")
for _id in PROBE_IDS:
    register(f"probe/{_id}", _probe_factory(_id))


def names() -> list[str]:
    return sorted(_REGISTRY)


def is_host(name: str) -> bool:
    """True for envs stepped on the host (Meta-World), which cannot run inside a jitted
    program: offline agents train on their data and ``seqrl eval-meta`` steps them."""
    return name in _HOST


def _import_factory(name: str) -> Callable[..., Environment] | None:
    """``"package.module:Factory"`` -> the object, or None when it cannot be imported."""
    module_name, _, attr = name.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`, resolve modules from the working dir
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attr, None)


def check_name(name: str, key: str | None = None) -> None:
    """Raises a one-line ``UserError`` naming the closest registered names.

    Besides registered names, ``"package.module:Factory"`` names any importable environment
    class or factory (so the CLI can train on a user's env without registering it).
    """
    if name in _REGISTRY:
        return
    if ":" in name:
        if _import_factory(name) is None:
            msg = f"environment {name!r}: cannot import it (expected package.module:Factory)"
            raise ConfigError(f"config key '{key}': {msg}") if key else UserError(msg)
        return
    close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
    if not close:  # match on the part after the family, e.g. "CartPole-v1"
        short = {n.split("/", 1)[-1].lower(): n for n in _REGISTRY}
        hits = difflib.get_close_matches(name.split("/")[-1].lower(), short, n=3, cutoff=0.4)
        close = [short[h] for h in hits]
    hint = f"; closest: {', '.join(close)}" if close else "; see `seqrl envs`"
    if key:
        raise ConfigError(f"config key '{key}': unknown environment {name!r}{hint}")
    raise UserError(f"unknown environment {name!r}{hint}")


def make_raw(name: str, **kwargs) -> Environment:
    """The backend's env without auto-reset or statistics (for wrappers of your own)."""
    check_name(name)
    factory = _REGISTRY.get(name) or _import_factory(name)
    try:
        return factory(**kwargs)
    except TypeError as e:  # a bad env_kwargs entry
        raise UserError(f"environment {name!r} rejected env_kwargs {kwargs}: {e}") from None


def make(name: str, **kwargs) -> Environment:
    """An auto-resetting env with episode statistics: ``env.reset``, ``env.step``,
    ``env.default_params``, ``env.observation_space(params)``, ``env.action_space(params)``."""
    if is_host(name):
        raise UserError(
            f"{name} is stepped on the host (Meta-World, not JAX): it cannot run inside a "
            "jitted training loop; train an offline agent (meta_dt, prompt_dt) on its data "
            f"(seqrl collect {name} ...) and evaluate it with seqrl eval-meta"
        )
    return EpisodeStatistics(AutoReset(make_raw(name, **kwargs)))


def make_vec(
    name: str,
    num_envs: int,
    *,
    env_kwargs: dict | None = None,
    clip_action: bool = True,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
    obs_stats: Any = None,
    params_axis: int | None = None,
) -> Environment:
    """``num_envs`` auto-resetting copies with statistics and the chosen wrappers.

    Order: raw -> AutoReset -> EpisodeStatistics -> ClipAction -> VecEnv -> NormalizeObservation
    -> NormalizeReward, so episode returns are always in the env's own reward units.
    ``obs_stats`` (a ``RunningMeanStd``) freezes observation normalization at those statistics.
    """
    env: Environment = make(name, **(env_kwargs or {}))
    if clip_action:
        env = ClipAction(env)
    env = VecEnv(env, num_envs, params_axis=params_axis)
    if normalize_obs:
        env = NormalizeObservation(env, stats=obs_stats)
    if normalize_reward:
        env = NormalizeReward(env, gamma)
    return env


from seqrl.envs.popgym import register_all as _register_popgym  # noqa: E402

_register_popgym(register)
