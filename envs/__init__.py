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
from seqrl.envs.registry import make, make_raw, make_vec, names, register
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
    "make_raw",
    "make_vec",
    "names",
    "register",
]
