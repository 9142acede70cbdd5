"""Meta-RL task families (see :mod:`seqrl.envs.meta.core`)."""

from seqrl.envs.meta.core import (
    SPLITS,
    FamilyParams,
    TaskFamily,
    TaskObserved,
    num_tasks,
    task_at,
)
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
from seqrl.errors import UserError

FAMILIES = {
    "PointRobot": PointRobot,
    "CheetahVel": CheetahVel,
    "CheetahDir": CheetahDir,
    "AntDir": AntDir,
    "HopperParam": HopperParam,
    "WalkerParam": WalkerParam,
}


def make_family(name: str, episodes_per_trial: int = 0, observe_task: bool = False, **kwargs):
    """The family ``name`` (``FAMILIES``), in trials of ``episodes_per_trial`` episodes if > 0;
    ``observe_task``: the true task appended to every observation (:class:`TaskObserved`, a
    goal-conditioned data generator's input)."""
    if not isinstance(observe_task, bool):
        raise UserError(f"env_kwargs 'observe_task' must be true or false, got {observe_task!r}")
    if observe_task and episodes_per_trial:
        raise UserError("env_kwargs: observe_task and episodes_per_trial exclude each other")
    family = FAMILIES[name](**kwargs)
    if observe_task:
        return TaskObserved(family)
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
    "TaskObserved",
    "TaskTrials",
    "make_family",
    "num_tasks",
    "task_at",
]
