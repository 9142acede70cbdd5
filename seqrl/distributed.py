"""Scaling out on ``jax.sharding``: one device mesh, seeds or the data batch sharded across it,
and multi-host start-up with ``jax.distributed``.

The loop builds a 1-D :class:`~jax.sharding.Mesh` (axis ``"batch"``) over the devices a config
asks for (``devices: all | N``) and shards ONE axis across it:

- ``seeds``: every leaf of the stacked per-seed learner state along its seed axis, when the
  devices divide ``num_seeds`` (each device trains whole seeds; nothing is communicated);
- ``batch``: otherwise the agent's data-parallel axis (:class:`DataAxis`: PPO's env batch, the
  DT's batch of windows), with everything else (parameters, optimizer state) replicated; the
  compiler places the gradient reduction.

On one device both are the same program as before. Nothing here uses ``pmap``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from seqrl.errors import ConfigError, UserError

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class DataAxis:
    """An agent's data-parallel axis inside one seed, sharded when the seeds are not.

    ``size`` is its length and ``key`` the config key that sets it (for errors); ``specs(state)``
    maps one seed's (abstract) learner state to a pytree like it of ``PartitionSpec`` over
    :data:`AXIS` (``P()``: replicated).
    """

    size: int
    key: str
    specs: Callable[[Any], Any]


def replicated_specs(state: Any) -> Any:
    """``P()`` for every leaf: a learner state with no data axis of its own (the DT samples its
    batch inside the update, see :func:`constrain_batch`)."""
    return jax.tree.map(lambda _: PartitionSpec(), state)


def leading_axis_specs(make: Callable[[int], Any], n: int) -> Any:
    """``P(AXIS)`` for each leaf of ``make(n)`` whose leading axis has length ``n`` because of
    ``n`` (it changes with ``n``), else ``P()``; ``make`` is traced, never run."""
    a, b = jax.eval_shape(lambda: make(n)), jax.eval_shape(lambda: make(n + 1))
    return jax.tree.map(
        lambda x, y: PartitionSpec(AXIS) if x.shape[:1] != y.shape[:1] else PartitionSpec(), a, b
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's arrays live: the mesh and which axis is sharded (``seeds`` or ``batch``)."""

    mesh: Mesh
    shard: str
    data_axis: DataAxis | None = None

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def states(self, abstract: Any) -> Any:
        """Shardings of the stacked learner states ``[num_seeds, ...]``."""
        if self.shard == "seeds":
            return jax.tree.map(lambda _: NamedSharding(self.mesh, PartitionSpec(AXIS)), abstract)
        one_seed = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract)
        specs = self.data_axis.specs(one_seed)
        return jax.tree.map(
            lambda spec: NamedSharding(self.mesh, PartitionSpec(None, *spec)),
            specs,
            is_leaf=lambda x: isinstance(x, PartitionSpec),
        )

    def describe(self) -> dict:
        return {
            "devices": self.num_devices,
            "sharded": "seeds" if self.shard == "seeds" else self.data_axis.key,
            "processes": jax.process_count(),
        }


def observed_placement(tree: Any) -> dict:
    """Where the arrays of ``tree`` really are (not where a config asked for them):
    ``devices``, how many devices hold a part of them; ``leaves``, how many arrays;
    ``split_leaves``, per axis (a string), how many arrays are cut along it across devices (each
    device holds only a slice). Replicated arrays count in neither."""
    devices, split, leaves = set(), {}, jax.tree.leaves(tree)
    for x in leaves:
        devices |= set(x.sharding.device_set)
        shard = x.sharding.shard_shape(x.shape)
        for axis, (whole, part) in enumerate(zip(x.shape, shard, strict=True)):
            if part != whole:
                split[str(axis)] = split.get(str(axis), 0) + 1
    return {"devices": len(devices), "leaves": len(leaves), "split_leaves": split}


def select_devices(devices: str | int) -> list:
    """The devices ``devices: all | N`` names (all processes' devices under jax.distributed)."""
    available = jax.devices()
    if devices == "all":
        return available
    if devices > len(available):
        raise ConfigError(
            f"config key 'devices' asks for {devices} devices; {len(available)} available "
            f"({available[0].platform})"
        )
    if jax.process_count() > 1 and devices != len(available):
        raise ConfigError(
            f"config key 'devices' must be 'all' (or {len(available)}) in a run over "
            f"{jax.process_count()} processes, got {devices}"
        )
    return available[:devices]


def placement(
    devices: str | int,
    num_seeds: int,
    data_axis: DataAxis | None,
    log: Callable[[str], None] = print,
) -> Placement:
    """Shards the seeds when the devices divide ``num_seeds``, else ``data_axis``.

    An explicit ``devices: N`` that divides neither is a one-line error; ``devices: all`` then
    uses the largest number of the devices that divides one of them (and says so).
    """
    chosen = select_devices(devices)

    def fits(n: int) -> str | None:
        if num_seeds % n == 0:
            return "seeds"
        if data_axis is not None and data_axis.size % n == 0:
            return "batch"
        return None

    n = len(chosen)
    if fits(n) is None:
        what = f"num_seeds ({num_seeds})"
        if data_axis is not None:
            what += f" or {data_axis.key} ({data_axis.size})"
        if devices != "all" or jax.process_count() > 1:
            raise ConfigError(f"config key 'devices' ({n}) must divide {what}")
        n = max(k for k in range(1, n + 1) if fits(k) is not None)
        log(f"using {n} of {len(chosen)} devices: {len(chosen)} do not divide {what}")
        chosen = chosen[:n]
    mesh = Mesh(np.array(chosen), (AXIS,), axis_types=(AxisType.Auto,))
    return Placement(mesh, fits(n), data_axis)


def put(tree: Any, shardings: Any) -> Any:
    """``tree`` (host or device arrays holding the same values on every process) placed with
    ``shardings`` (one sharding or a tree of them): ``device_put`` in one process, each
    process's shards cut from its copy under ``jax.distributed``."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly sharded, multi-process) arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def broadcast(tree: Any) -> Any:
    """Process 0's values of ``tree`` (numpy arrays) on every process."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(tree)


def is_primary() -> bool:
    """Logging, checkpoints and run files come from process 0 only."""
    return jax.process_index() == 0


# the mesh whose batch axis constrain_batch shards; set by the loop while it traces in "batch"
_batch_mesh: Mesh | None = None


class sharding_batch:
    """Context: while the loop traces a run that shards the data batch over ``mesh``,
    :func:`constrain_batch` shards arrays along it (elsewhere it leaves them alone)."""

    def __init__(self, mesh: Mesh | None):
        self.mesh = mesh

    def __enter__(self):
        global _batch_mesh
        self.previous, _batch_mesh = _batch_mesh, self.mesh

    def __exit__(self, *exc):
        global _batch_mesh
        _batch_mesh = self.previous


def constrain_batch(tree: Any, axis: int = 0) -> Any:
    """Shards ``axis`` of every array in ``tree`` across the devices when the loop shards the
    data batch (a ``with_sharding_constraint``; the identity otherwise)."""
    if _batch_mesh is None or _batch_mesh.devices.size == 1:
        return tree
    sharding = NamedSharding(_batch_mesh, PartitionSpec(*[None] * axis, AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


# ---------------------------------------------------------------------------------------------
# Multi-host start-up
# ---------------------------------------------------------------------------------------------

ENV_VARS = {
    "coordinator": "SEQRL_COORDINATOR",
    "num_processes": "SEQRL_NUM_PROCESSES",
    "process_id": "SEQRL_PROCESS_ID",
}


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {text!r}") from None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """``jax.distributed.initialize`` from the arguments, else the environment variables
    ``SEQRL_COORDINATOR`` (host:port of process 0), ``SEQRL_NUM_PROCESSES``,
    ``SEQRL_PROCESS_ID``. Returns False (and does nothing) when no coordinator is given.
    Must run before anything touches a device. CPU processes exchange data over gloo."""
    coordinator = coordinator or os.environ.get(ENV_VARS["coordinator"]) or None
    if num_processes is None:
        num_processes = _env_int(ENV_VARS["num_processes"])
    if process_id is None:
        process_id = _env_int(ENV_VARS["process_id"])
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise UserError(
                "--num-processes/--process-id need --coordinator HOST:PORT (or SEQRL_COORDINATOR)"
            )
        return False
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes is None or process_id is None:
        raise UserError(
            "--coordinator needs --num-processes N and --process-id I (or SEQRL_NUM_PROCESSES "
            "and SEQRL_PROCESS_ID)"
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise UserError(
            f"--process-id must be in 0..{num_processes - 1} with --num-processes "
            f"{num_processes}, got {process_id}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return True


__all__ = [
    "AXIS",
    "DataAxis",
    "PartitionSpec",
    "Placement",
    "broadcast",
    "constrain_batch",
    "initialize",
    "is_primary",
    "leading_axis_specs",
    "observed_placement",
    "placement",
    "put",
    "replicated_specs",
    "select_devices",
    "sharding_batch",
    "to_host",
]
