"""Meta-RL task families (see :mod:`seqrl.envs.meta.core`)."""

from seqrl.envs.meta.core import SPLITS, FamilyParams, TaskFamily, num_tasks, task_at
from seqrl.envs.meta.locomotion import (
    AntDir,
    BodyParamFamily,
    BraxTaskFamily,
    CheetahDir,
    CheetahVel,
    HopperParam,
    WalkerParam,
)
from seqrl.envs.meta.point_robot import PointRobot
from seqrl.envs.meta.trials import TaskTrials

FAMILIES = {
    "PointRobot": PointRobot,
    "CheetahVel": CheetahVel,
    "CheetahDir": CheetahDir,
    "AntDir": AntDir,
    "HopperParam": HopperParam,
    "WalkerParam": WalkerParam,
}


def make_family(name: str, episodes_per_trial: int = 0, **kwargs):
    """The family ``name`` (``FAMILIES``), in trials of ``episodes_per_trial`` episodes if > 0."""
    family = FAMILIES[name](**kwargs)
    return TaskTrials(family, episodes_per_trial) if episodes_per_trial else family


__all__ = [
    "AntDir",
    "BodyParamFamily",
    "HopperParam",
    "WalkerParam",
    "BraxTaskFamily",
    "CheetahDir",
    "CheetahVel",
    "FAMILIES",
    "SPLITS",
    "FamilyParams",
    "PointRobot",
    "TaskFamily",
    "TaskTrials",
    "make_family",
    "num_tasks",
    "task_at",
]
