"""The one training loop: jitted chunks of updates on device under a thin host loop.

An agent hands the loop a :class:`Trainer` of pure functions for ONE seed. The loop vmaps them
over ``num_seeds``, runs ``lax.scan`` over a chunk of updates with the learner state donated,
and between chunks (on the host) advances the progress bar, writes ``metrics.jsonl`` and
TensorBoard events, and saves checkpoints. At the end it evaluates the final policy on device and
writes ``summary.json`` and ``curve.png``. ``--resume`` restores the latest checkpoint and goes
on with the same chunks, so a resumed run ends with the same parameters as an uninterrupted one
(also after a crash: checkpoints are committed atomically, and a damaged newest one is set aside
in favour of the one before it).

Every update is checked on device for NaN/inf (see :func:`nonfinite`): the first chunk that
produces one stops the run before it is checkpointed, naming the update and the quantity.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqrl import config as cfg
from seqrl import distributed, runtime
from seqrl.errors import ConfigError, NonFiniteError, UserError
from seqrl.files import ensure_free_space, ensure_writable_dir, write_json_atomic, write_text_atomic
from seqrl.runtime import configure_jax, versions
from seqrl.trainer import Trainer, train_fn, update_fn  # noqa: F401  (train_fn: the API)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """One key per seed; seed i of a run is independent of how many seeds run beside it."""
    return run_keys(seed, num_seeds)[0]


# a seed's evaluation key: its training key folded with this (evaluation never shares draws)
_EVAL_FOLD = 1_000_003


@partial(jax.jit, static_argnums=(0, 1))
def run_keys(seed: int, num_seeds: int) -> tuple[jax.Array, jax.Array]:
    """``(training keys, evaluation keys)``, one of each per seed (see :func:`seed_keys`): one
    small compiled program, which compiles faster than the same bits op by op
    (docs/benchmarks.md)."""
    base = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))
    return keys, jax.vmap(lambda k: jax.random.fold_in(k, _EVAL_FOLD))(keys)


# what `nonfinite` checks, in order; its code i + 1 names NONFINITE[i]
NONFINITE = ("loss", "gradients", "parameters")


def nonfinite(state: Any, metrics: dict) -> jax.Array:
    """0 when an update left everything finite, else ``1 + i`` for the first quantity
    ``NONFINITE[i]`` that is not: the metrics ``loss`` and ``*_loss``, the metric
    ``grad_norm``, then every array of ``state.params`` (one reduction each, on device)."""
    groups = (
        [v for k, v in metrics.items() if k == "loss" or k.endswith("_loss")],
        [v for k, v in metrics.items() if k == "grad_norm"],
        jax.tree.leaves(getattr(state, "params", state)),
    )
    code = jnp.int32(0)
    for i in reversed(range(len(groups))):  # the first failing group wins
        arrays = [jnp.asarray(x) for x in groups[i]]
        finite = [jnp.isfinite(x).all() for x in arrays if jnp.issubdtype(x.dtype, jnp.inexact)]
        if finite:
            code = jnp.where(jnp.stack(finite).all(), code, i + 1)
    return code


def make_chunk(trainer: Trainer, num_updates: int, *, variable: bool = False):
    """``chunk(states[S], data) -> (states, metrics[S, num_updates])``: ``num_updates`` updates
    per seed in one ``lax.scan`` (no per-update branching: a ``lax.cond`` per update is slower,
    docs/benchmarks.md).
    ``data`` is the trainer's dataset (None for online agents), shared by all seeds.
    ``metrics["nonfinite"]`` is :func:`nonfinite` after each update.

    ``variable=True``: ``chunk(states, data, length)`` runs the first ``length`` (a traced
    ``int32`` <= ``num_updates``) updates in a loop of that many iterations, so one compiled
    program serves a run's equal chunks and its shorter last one; metrics rows past ``length``
    are zeros."""

    def chunk(states, data, length=None):
        def per_seed(state):
            step = update_fn(trainer, data)

            def update(s):
                s, metrics = step(s)
                return s, {**metrics, "nonfinite": nonfinite(s, metrics)}

            if not variable:
                return jax.lax.scan(lambda s, _: update(s), state, None, num_updates)
            update = jax.jit(update)  # traced once: for the metrics' shapes, then in the loop
            shapes = jax.eval_shape(update, state)[1]
            rows = jax.tree.map(lambda m: jnp.zeros((num_updates, *m.shape), m.dtype), shapes)

            def body(i, carry):
                s, rows = carry
                s, metrics = update(s)
                return s, jax.tree.map(lambda r, m: r.at[i].set(m), rows, metrics)

            return jax.lax.fori_loop(0, length, body, (state, rows))

        return jax.vmap(per_seed)(states)

    return chunk


def init_seeds(trainer: Trainer) -> Callable[[jax.Array], Any]:
    """``init(keys[S]) -> states[S]``, one seed after another (``lax.map``, not ``vmap``):
    XLA:CPU can hang at run time when the seeds' orthogonal initializers make their LAPACK
    calls side by side (the hangs seen: docs/benchmarks.md). Init runs once, so the sequence
    costs nothing."""
    return lambda keys: jax.lax.map(trainer.init, keys)


def map_seeds(fn: Callable[[Any, jax.Array], Any], states: Any, keys: jax.Array) -> Any:
    """``fn(state, key)`` seed by seed, unjitted, outputs stacked on the host: for functions
    that cannot be traced (they step host-side envs)."""
    outs = [fn(jax.tree.map(lambda x, i=i: x[i], states), keys[i]) for i in range(keys.shape[0])]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *outs)


def plan_chunks(num_updates: int, num_chunks: int) -> list[int]:
    """Chunk sizes summing to ``num_updates``, about ``num_chunks`` of them.

    Prefer a divisor of ``num_updates`` giving between half and twice the requested number of
    chunks; otherwise equal chunks plus one shorter last chunk (the same compiled program runs
    it: :func:`make_chunk` with ``variable=True``).
    """
    target = num_updates / num_chunks
    # a divisor d gives k = num_updates // d chunks, itself a divisor: search over k (cheap)
    divisors = [
        num_updates // k
        for k in range(math.ceil(num_chunks / 2), min(2 * num_chunks, num_updates) + 1)
        if num_updates % k == 0
    ]
    if divisors:
        size = min(divisors, key=lambda d: (abs(d - target), d))
        return [size] * (num_updates // size)
    size = math.ceil(target)
    sizes = [size] * (num_updates // size)
    if num_updates % size:
        sizes.append(num_updates % size)
    return sizes


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict


def default_run_dir(config_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{config_name}-{stamp}"
    i = 1
    while path.exists():
        path = Path("runs") / f"{config_name}-{stamp}-{i}"
        i += 1
    return path


def _check_disk_space(run_dir: Path, abstract: Any, trainer: Trainer, config: Any) -> None:
    """Refuses a run whose checkpoints and logs would not fit on the disk (before compiling)."""
    state_bytes = sum(x.size * getattr(x.dtype, "itemsize", 8) for x in jax.tree.leaves(abstract))
    loop = config.loop
    saves = -(-len(plan_chunks(trainer.num_updates, loop.num_chunks)) // loop.checkpoint_every)
    kept = min(loop.keep_checkpoints + 1, saves + 1) if loop.keep_checkpoints else saves + 1
    logs = trainer.num_updates * 2048  # metrics.jsonl and TensorBoard rows
    needed = kept * (state_bytes + 2**18) + logs + 2**20
    ensure_free_space(run_dir, needed, "its checkpoints and logs")


def _compile_all(
    lowerings: list[tuple[Callable[[], Any], bool]], then: Callable[[], Any]
) -> tuple[list, Any]:
    """Lowers the programs (``(lower, run_once)`` pairs) one after another (Python, on this
    thread) and compiles each in a thread as soon as it is lowered (XLA compiles on one thread
    and JAX lets go of the GIL), so the longest compile overlaps the later lowerings and the
    other compiles; ``then()`` runs here while they compile. Returns
    ``([compiled programs], then())``."""
    with ThreadPoolExecutor(min(len(lowerings), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(runtime.compile, lower(), once) for lower, once in lowerings]
        after = then()
        return [f.result() for f in futures], after


def _ready_at(arrays: Any) -> float:
    """Waits for ``arrays`` to be computed; returns when that was (``time.perf_counter``)."""
    jax.block_until_ready(arrays)
    return time.perf_counter()


def _rows(
    metrics: dict, first_update: int, n: int, trainer: Trainer, t0: float, t1: float
) -> list[dict]:
    """One row per update: mean over seeds of each metric, and the per-seed returns."""
    host = jax.tree.map(np.asarray, metrics)
    rows = []
    seeds = next(iter(host.values())).shape[0]
    for i in range(n):
        update = first_update + i + 1
        if "episode_return" in host:
            returns = [float(r) for r in host["episode_return"][:, i]]
        else:  # offline agents see no episodes while they learn
            returns = [math.nan] * seeds
        finite = [r for r in returns if math.isfinite(r)]
        row = {
            "update": update,
            trainer.unit: update * trainer.steps_per_update,
            # seconds since the run started (compile and host work included), interpolated
            # between the start and end of the chunk
            "wall_seconds": t0 + (t1 - t0) * (i + 1) / n,
            "return_mean": float(np.mean(finite)) if finite else None,
            "return_seeds": returns,
        }
        for key, value in host.items():
            if key != "episode_return":
                row[key] = float(np.mean(value[:, i]))
        rows.append(row)
    return rows


def run(
    config: Any,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    config_name: str = "run",
    stop_after_chunks: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Trains ``config`` into ``run_dir`` (or resumes the run there). See the module docstring.

    ``stop_after_chunks`` stops early (after that many chunks in this call) with a checkpoint,
    leaving a run to be resumed. The phases below run in order: plan, compile, restore or
    init, chunks, summarize.
    """
    configure_jax()
    plan = _plan_run(config, run_dir, resume, config_name, log, time.perf_counter())
    programs = _compile_programs(plan)
    state = _restore_or_init(plan, programs)
    _train_chunks(plan, programs, state, stop_after_chunks, progress)
    if state.start_chunk + state.chunks_run < plan.num_chunks:
        plan.log(
            f"stopped after chunk {state.start_chunk + state.chunks_run}/{plan.num_chunks}; "
            f"resume with: seqrl train --resume {plan.run_dir}"
        )
        return RunResult(plan.run_dir, {})
    return _summarize(plan, programs, state)


# ---------------------------------------------------------------------------------------------
# The phases of `run`: plan, compile, restore or init, chunks, summarize
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What :func:`_plan_run` settled before anything compiles, for the phases after it."""

    config: Any
    trainer: Trainer
    run_dir: Path
    resume: bool
    primary: bool  # process 0: the one that logs and writes the run
    processes: int
    log: Callable[[str], None]
    t_start: float  # time.perf_counter() when the run started
    placement: distributed.Placement
    key_shapes: Any  # the seed keys' shapes and dtype
    abstract: Any  # the learner states' shapes and dtypes, [num_seeds, ...]
    sizes: list[int]  # updates per chunk (plan_chunks)
    starts: list[int]  # updates done before each chunk
    replicated: Any  # the sharding of the keys, the dataset and the metrics
    state_shardings: Any
    data: Any  # the trainer's dataset on the devices (None for online agents)

    @property
    def num_chunks(self) -> int:
        return len(self.sizes)

    @property
    def variable(self) -> bool:
        """Whether the last chunk is shorter (it runs through the same program: make_chunk)."""
        return len(set(self.sizes)) > 1

    @property
    def total_steps(self) -> int:
        return self.trainer.num_updates * self.trainer.steps_per_update

    def lower(self, fn: Callable, *args: Any, **jit_kwargs: Any) -> Any:
        """:func:`seqrl.runtime.lower` under the data axis's sharding (a batch-sharded run)."""
        batch_mesh = self.placement.mesh if self.placement.shard == "batch" else None
        with distributed.sharding_batch(batch_mesh):
            return runtime.lower(fn, *args, **jit_kwargs)


def _plan_run(
    config: Any,
    run_dir: str | Path | None,
    resume: bool,
    config_name: str,
    log: Callable[[str], None],
    t_start: float,
) -> _Plan:
    """PLAN: the trainer, its placement and the chunks; refuses what cannot run (a taken or
    unwritable run directory, a full disk, too many updates) before anything compiles."""
    # under jax.distributed every process trains; process 0 alone logs and writes the run
    primary, processes = distributed.is_primary(), jax.process_count()
    if not primary:
        log = _silent
    if resume and processes > 1:
        raise UserError("--resume is not supported in a run over several processes yet")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config_name)
    if not resume and (run_dir / "checkpoints").exists():
        raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir}")
    trainer: Trainer = cfg.agent_module(config.agent).make_trainer(config)
    if trainer.num_updates > 2**31 - 1:  # the agents count updates in int32
        raise ConfigError(
            f"the budget is {trainer.num_updates:,} updates per seed; at most 2**31 - 1 fit"
        )
    placement = distributed.placement(config.devices, config.num_seeds, trainer.data_axis, log)
    if primary:  # before any compile starts
        ensure_writable_dir(run_dir, f"cannot write to run directory {run_dir}")
    # traces, compiles nothing (the keys themselves are made while the programs compile)
    key_shapes = jax.eval_shape(lambda: run_keys(config.seed, config.num_seeds))[0]
    abstract = jax.eval_shape(jax.vmap(trainer.init), key_shapes)
    if primary:
        _check_disk_space(run_dir, abstract, trainer, config)
    log(f"run directory: {run_dir}")
    if placement.num_devices > 1:
        where = placement.describe()
        log(f"sharding {where['sharded']} over {where['devices']} devices")
    if not resume and primary:
        write_text_atomic(run_dir / "config.yaml", _yaml(config))
    sizes = plan_chunks(trainer.num_updates, config.loop.num_chunks)
    starts = [sum(sizes[:c]) for c in range(len(sizes))]

    # PLACE: the seed keys and the dataset replicated, learner states as `placement` says
    replicated = placement.replicated
    state_shardings = placement.states(abstract)
    data = None if trainer.data is None else distributed.put(trainer.data, replicated)
    return _Plan(
        config=config,
        trainer=trainer,
        run_dir=run_dir,
        resume=resume,
        primary=primary,
        processes=processes,
        log=log,
        t_start=t_start,
        placement=placement,
        key_shapes=key_shapes,
        abstract=abstract,
        sizes=sizes,
        starts=starts,
        replicated=replicated,
        state_shardings=state_shardings,
        data=data,
    )


@dataclasses.dataclass(frozen=True)
class _Programs:
    """The compiled chunk and init programs, and the seeds' keys (made while they compiled)."""

    chunk: Any
    init: Any
    keys: jax.Array
    eval_keys: jax.Array
    compile_seconds: float


def _compile_programs(plan: _Plan) -> _Programs:
    """COMPILE the chunk of updates and init ahead of time (no run yet), each as soon as it is
    traced, side by side, the chunk first (its compile is the longest).

    The final evaluation is traced while the first chunk trains (on the core training leaves
    idle, instead of taking CPU from the compiles), so that a mistake in it stops the run after
    that chunk, before its checkpoint; it is compiled after training, where it delays nothing
    (:func:`_train_chunk`, :func:`_final_evaluation`)."""
    start = time.perf_counter()
    (chunk, init), (keys, eval_keys) = _compile_all(
        [(lambda: _lower_chunk(plan), False), (lambda: _lower_init(plan), True)],
        then=lambda: _make_keys(plan),
    )
    return _Programs(chunk, init, keys, eval_keys, time.perf_counter() - start)


def _lower_chunk(plan: _Plan) -> Any:
    """One program for every chunk: plan_chunks' equal chunks, and its shorter last one (if
    any) through the same program with the number of updates as an argument."""
    length = (jax.ShapeDtypeStruct((), jnp.int32),) if plan.variable else ()
    return plan.lower(
        make_chunk(plan.trainer, plan.sizes[0], variable=plan.variable),
        plan.abstract,
        plan.data,
        *length,
        in_shardings=(plan.state_shardings, plan.replicated, *(plan.replicated,) * len(length)),
        out_shardings=(plan.state_shardings, plan.replicated),
        donate_argnums=0,
    )


def _lower_init(plan: _Plan) -> Any:
    return plan.lower(
        init_seeds(plan.trainer),
        plan.key_shapes,
        run_once=True,
        in_shardings=plan.replicated,
        out_shardings=plan.state_shardings,
    )


def _make_keys(plan: _Plan) -> tuple[jax.Array, jax.Array]:
    """The seeds' training and evaluation keys, on this thread while the programs compile
    (orbax is imported here too, for the same reason)."""
    import seqrl.checkpoint  # noqa: F401  (orbax's import is slow: docs/benchmarks.md)

    made = run_keys(plan.config.seed, plan.config.num_seeds)
    return tuple(distributed.put(k, plan.replicated) for k in made)


def _evaluate_one(plan: _Plan) -> Callable[[Any, jax.Array], dict]:
    """The final evaluation of one seed: ``evaluate(state, key)``."""
    loop, trainer = plan.config.loop, plan.trainer
    return lambda s, k: trainer.evaluate(s, k, loop.eval_episodes, loop.eval_deterministic)


def _lower_evaluate(plan: _Plan) -> Any:
    """The final evaluation's program, lowered; None: the trainer evaluates on the host
    (map_seeds, after training)."""
    if plan.trainer.host_evaluate:
        return None
    return plan.lower(
        jax.vmap(_evaluate_one(plan)),
        plan.abstract,
        plan.key_shapes,
        in_shardings=(plan.state_shardings, plan.replicated),
        out_shardings=plan.replicated,
    )


@dataclasses.dataclass
class _RunState:
    """Where the run stands between chunks (what a checkpoint's metadata records, and more)."""

    states: Any  # the learner states [num_seeds, ...], on the devices
    checkpointer: Any  # None on processes other than 0
    metrics_sink: Any  # None on processes other than 0
    start_chunk: int  # the first chunk this call runs
    train_seconds: float
    wall_offset: float  # the run's seconds before this call (resumed)
    last_saved: int | None  # the update of the newest checkpoint
    compile_seconds: float
    chunks_run: int = 0  # chunks run in this call
    evaluation_traced: bool = False
    evaluate_lowered: Any = None


def _restore_or_init(plan: _Plan, programs: _Programs) -> _RunState:
    """RESTORE the newest checkpoint that loads (``--resume``), or INIT the learner states;
    metrics.jsonl is trimmed to the updates done."""
    from seqrl.checkpoint import Checkpointer
    from seqrl.logging import JsonlSink

    loop, run_dir, log = plan.config.loop, plan.run_dir, plan.log
    checkpointer = (
        Checkpointer(
            run_dir / "checkpoints", keep=loop.keep_checkpoints, asynchronous=True, clean_up=True
        )
        if plan.primary
        else None
    )
    metrics_sink = JsonlSink(run_dir / "metrics.jsonl") if plan.primary else None
    start_chunk, train_seconds, wall_offset, last_saved = 0, 0.0, 0.0, None
    if plan.resume and checkpointer.steps():
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            plan.abstract,
            plan.state_shardings,
        )
        states, meta = _restore_for_resume(checkpointer, target, log)
        start_chunk, train_seconds = meta["chunks_done"], meta["train_seconds"]
        wall_offset = meta.get("wall_seconds", 0.0)
        last_saved = meta["updates_done"]
        metrics_sink.trim(meta["updates_done"])
        log(f"resumed from update {meta['updates_done']} (chunk {start_chunk}/{plan.num_chunks})")
    else:
        if plan.resume:  # killed before its first checkpoint
            log(f"no checkpoint in {checkpointer.directory} yet: starting from update 0")
        states = programs.init(programs.keys)
        if plan.primary:
            metrics_sink.trim(0)
    return _RunState(
        states=states,
        checkpointer=checkpointer,
        metrics_sink=metrics_sink,
        start_chunk=start_chunk,
        train_seconds=train_seconds,
        wall_offset=wall_offset,
        last_saved=last_saved,
        compile_seconds=programs.compile_seconds,
    )


def _train_chunks(
    plan: _Plan,
    programs: _Programs,
    state: _RunState,
    stop_after_chunks: int | None,
    progress: bool | None,
) -> None:
    """CHUNKS: the host loop. After each chunk its metrics rows (metrics.jsonl, TensorBoard),
    the non-finite check, the progress bar, and every ``checkpoint_every`` chunks (and after
    the last, or the last before a stop) a checkpoint."""
    from seqrl.logging import ProgressBar, TensorBoardSink

    config, trainer, loop = plan.config, plan.trainer, plan.config.loop
    done_before = sum(plan.sizes[: state.start_chunk]) * trainer.steps_per_update
    tensorboard = (
        TensorBoardSink(plan.run_dir / "tensorboard", purge_step=done_before or None)
        if loop.tensorboard and plan.primary
        else None
    )
    show = (loop.progress if progress is None else progress) and plan.primary
    bar = ProgressBar(plan.total_steps, f"{config.agent} {config.env}", show, completed=done_before)
    # notes when the first chunk ends while this thread traces the evaluation (on this thread:
    # JAX's context managers, e.g. enable_x64 or default_matmul_precision, are thread-local)
    waiter = ThreadPoolExecutor(1)
    try:
        for c in range(state.start_chunk, plan.num_chunks):
            if stop_after_chunks is not None and state.chunks_run >= stop_after_chunks:
                break
            rows, codes, bad, dt = _train_chunk(plan, programs, state, c, waiter)
            first_update, n = plan.starts[c], plan.sizes[c]
            if plan.primary:
                state.metrics_sink.write(rows)
            if tensorboard is not None:
                tensorboard.write(rows)
            if bad.size:
                raise _nonfinite_error(
                    codes,
                    bad[0],
                    first_update,
                    state.last_saved,
                    plan.run_dir.absolute() / "checkpoints",
                )
            done = first_update + n
            recent = [r["return_mean"] for r in rows if r["return_mean"] is not None]
            bar.update(
                done * trainer.steps_per_update,
                n * trainer.steps_per_update * config.num_seeds / max(dt, 1e-9),
                recent[-1] if recent else None,
            )
            stopping = stop_after_chunks is not None and state.chunks_run >= stop_after_chunks
            if (c + 1) % loop.checkpoint_every == 0 or c + 1 == plan.num_chunks or stopping:
                _save_checkpoint(plan, state, c, done)
    finally:
        waiter.shutdown()
        if state.checkpointer is not None:
            state.checkpointer.wait()
        bar.close()
        if tensorboard is not None:
            tensorboard.close()


def _train_chunk(
    plan: _Plan, programs: _Programs, state: _RunState, c: int, waiter: ThreadPoolExecutor
) -> tuple[list[dict], np.ndarray, np.ndarray, float]:
    """Runs chunk ``c``; returns its metrics rows (up to the first non-finite update, never the
    bad state's), the non-finite codes ``[seeds, n]``, the bad updates' indices and its
    seconds. The first chunk of the call traces the final evaluation while it trains."""
    first_update, n = plan.starts[c], plan.sizes[c]
    t0 = time.perf_counter()
    length = (distributed.put(np.int32(n), plan.replicated),) if plan.variable else ()
    # dispatched: returns at once
    state.states, metrics = programs.chunk(state.states, plan.data, *length)
    if not state.evaluation_traced:  # a mistake in the evaluation stops the run here
        ended = waiter.submit(_ready_at, metrics)
        state.evaluate_lowered, state.evaluation_traced = _lower_evaluate(plan), True
        t1 = ended.result()
        state.compile_seconds += max(0.0, time.perf_counter() - t1)  # beyond the chunk
    else:
        jax.block_until_ready(metrics)
        t1 = time.perf_counter()
    codes = np.asarray(metrics.pop("nonfinite"))[:, :n]  # [seeds, n]
    bad = np.flatnonzero(codes.any(axis=0))
    dt = t1 - t0
    rows = _rows(
        metrics,
        first_update,
        n,
        plan.trainer,
        state.wall_offset + t0 - plan.t_start,
        state.wall_offset + t1 - plan.t_start,
    )
    if bad.size:  # keep the rows up to the first bad update, never the bad state
        rows = rows[: bad[0] + 1]
    state.train_seconds += dt
    state.chunks_run += 1
    return rows, codes, bad, dt


def _save_checkpoint(plan: _Plan, state: _RunState, c: int, done: int) -> None:
    """Saves the states after chunk ``c`` (``done`` updates) with what resuming needs."""
    meta = {
        "chunks_done": c + 1,
        "updates_done": done,
        "train_seconds": state.train_seconds,
        "wall_seconds": state.wall_offset + time.perf_counter() - plan.t_start,
    }
    # several processes: every one gathers the shards, process 0 writes them
    snapshot = state.states if plan.processes == 1 else distributed.to_host(state.states)
    if plan.primary:
        state.checkpointer.save(done, snapshot, meta)
    state.last_saved = done


def _final_evaluation(plan: _Plan, programs: _Programs, state: _RunState) -> dict:
    """EVALUATE the final policy on device (compiled now, traced during the first chunk), or
    seed by seed on the host; returns it as host arrays."""
    if not state.evaluation_traced:  # a finished run resumed: no chunk ran in this call
        state.evaluate_lowered = _lower_evaluate(plan)
    if state.evaluate_lowered is None:
        evaluate_one = _evaluate_one(plan)
        evaluate = lambda states, keys: map_seeds(evaluate_one, states, keys)
    else:
        start = time.perf_counter()
        evaluate = runtime.compile(state.evaluate_lowered, run_once=True)
        state.compile_seconds += time.perf_counter() - start
    return jax.tree.map(np.asarray, evaluate(state.states, programs.eval_keys))


def _summarize(plan: _Plan, programs: _Programs, state: _RunState) -> RunResult:
    """SUMMARIZE: the final evaluation, then summary.json and curve.png (process 0)."""
    from seqrl.plotting import plot_runs

    config, trainer, loop, placement = plan.config, plan.trainer, plan.config.loop, plan.placement
    evaluation = _final_evaluation(plan, programs, state)
    returns = evaluation["returns"]  # [seeds, episodes]
    summary = {
        "agent": config.agent,
        "env": config.env,
        f"total_{trainer.unit}": plan.total_steps,
        "total_updates": trainer.num_updates,
        "compile_seconds": round(state.compile_seconds, 3),
        "train_seconds": round(state.train_seconds, 3),
        f"{trainer.unit}_per_second": round(
            plan.total_steps * config.num_seeds / max(state.train_seconds, 1e-9), 1
        ),
        "final_return_mean": float(np.nanmean(returns)),
        "final_return_std": float(np.nanstd(returns)),
        "final_return_per_seed": [float(r) for r in np.nanmean(returns, axis=1)],
        "eval_episodes": int(returns.shape[1]),
        "eval_deterministic": loop.eval_deterministic,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seed": config.seed,
        "num_seeds": config.num_seeds,
        "devices": [str(d) for d in placement.mesh.devices.flat],
        # what the config asked for, and where the learner state really is
        "sharding": {**placement.describe(), **distributed.observed_placement(state.states)},
        "versions": versions(),
        "resumed": bool(plan.resume),
    }
    if "episode_returns" in evaluation:  # in-context: held-out tasks, return per episode index
        per_index = np.nanmean(evaluation["episode_returns"], axis=(0, 1))
        summary["final_return_per_episode_index"] = [float(r) for r in per_index]
    if not plan.primary:
        return RunResult(plan.run_dir, {})
    write_json_atomic(plan.run_dir / "summary.json", summary)
    plot_runs([plan.run_dir], plan.run_dir / "curve.png", labels=[f"{config.agent} {config.env}"])
    return RunResult(plan.run_dir, summary)


def _silent(_: str) -> None:
    pass


def _restore_for_resume(checkpointer: Any, abstract: Any, log: Callable[[str], None]):
    """The newest checkpoint that restores; damaged newer ones are moved aside (so the resumed
    run can write those steps again), and one line says so."""
    notes: list[str] = []
    states, meta = checkpointer.restore(abstract, log=notes.append)
    damaged = [s for s in checkpointer.steps() if s > meta["updates_done"]]
    if damaged:
        aside = checkpointer.set_aside(damaged)
        log(f"{notes[0]} (moved the damaged checkpoint aside to {aside})")
    return states, meta


def _nonfinite_error(
    codes: np.ndarray, index: int, first_update: int, last_saved: int | None, directory: Path
) -> NonFiniteError:
    seed = int(np.flatnonzero(codes[:, index])[0])
    quantity = NONFINITE[int(codes[seed, index]) - 1]
    kept = (
        f"kept the last good checkpoint, update {last_saved}, in {directory}"
        if last_saved is not None
        else "no checkpoint had been saved yet"
    )
    return NonFiniteError(
        f"training stopped: non-finite {quantity} at update {first_update + index + 1} "
        f"(seed {seed}); {kept}"
    )


def _yaml(config: Any) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(config), sort_keys=False)
