"""Environments: the protocol, wrappers, backend adapters and the registry."""

from seqrl.envs.core import (
    AutoReset,
    ClipAction,
    Environment,
    EpisodeStatistics,
    NormalizeObservation,
    NormalizeReward,
    VecEnv,
    Wrapper,
)
from seqrl.envs.registry import is_host, make, make_raw, make_vec, names, register
from seqrl.envs.spaces import Box, Discrete

__all__ = [
    "AutoReset",
    "Box",
    "ClipAction",
    "Discrete",
    "Environment",
    "EpisodeStatistics",
    "NormalizeObservation",
    "NormalizeReward",
    "VecEnv",
    "Wrapper",
    "make",
    "is_host",
    "make_raw",
    "make_vec",
    "names",
    "register",
]
