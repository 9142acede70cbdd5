"""Offline datasets from a trained online agent: ``seqrl collect RUN_DIR -o DATASET``.

Qualities (the data protocol of the Meta-DT paper, Wang et al. 2024):

- ``expert``: the run's latest checkpoint;
- ``medium``: an earlier checkpoint of the same run, the one whose deterministic evaluation
  return is closest to halfway between a uniformly random policy and the latest checkpoint (for
  tasks whose random return is about 0, such as CartPole, half of the latest's return; the
  random end keeps the rule meaningful for negative rewards, e.g. Pendulum);
- ``mixed``: 70% of the episodes from the medium checkpoint and 30% from the expert one.

Every part is ONE jitted program: ``num_envs`` envs step in parallel inside a ``while_loop``
until each has finished its first episode, writing each step into fixed ``[num_envs, max_len]``
buffers. The run's first seed (index 0) acts; observations are recorded raw (before the
policy's observation normalization), actions as the env received them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqrl import runs
from seqrl.data import (
    DatasetMeta,
    Trajectories,
    check_output_path,
    rollout_trajectories,
    save_dataset,
)
from seqrl.envs.core import NormalizeObservation
from seqrl.envs.spaces import Discrete
from seqrl.errors import UserError
from seqrl.evaluate import Step, episode_returns, row_mask
from seqrl.evaluate import rollout as seqrl_rollout
from seqrl.runs import Run
from seqrl.trainer import Actor, PolicyStep

QUALITIES = ("expert", "medium", "mixed")
MIXED_MEDIUM_FRACTION = 0.7
MEDIUM_FRACTION = 0.5  # medium: this far from a random policy's return to the latest's
SELECTION_EPISODES = 16  # deterministic episodes per checkpoint when choosing the medium one


@dataclasses.dataclass
class CollectResult:
    path: Path
    trajectories: Trajectories  # on device, padded to the longest episode
    meta: DatasetMeta


# ---------------------------------------------------------------------------------------------
# The on-device rollout
# ---------------------------------------------------------------------------------------------


def time_limit(params: Any) -> int | None:
    """The episode length cap in env params (``max_steps_in_episode``; in-context envs: episodes
    per trial times the inner cap), or None."""
    limit = getattr(params, "max_steps_in_episode", None)
    if limit is not None:
        return int(np.max(np.asarray(limit)))
    inner, per_trial = getattr(params, "env_params", None), getattr(params, "episodes_per_trial", 0)
    if inner is not None and per_trial:
        inner_limit = time_limit(inner)
        return None if inner_limit is None else int(per_trial) * inner_limit
    return None


def _perturbed(policy: PolicyStep, space: Any, noise: Any, normalize: Callable) -> PolicyStep:
    """``policy`` acting on ``normalize``-d observations, its actions epsilon-random (discrete)
    or with Gaussian noise of std ``noise`` (continuous; then clipped to the space). ``noise``
    is a number or one per env (``[num_envs]``)."""

    def perturb(action, key):
        noise_ = jnp.asarray(noise, jnp.float32)
        noise_ = noise_.reshape(noise_.shape + (1,) * (action.ndim - noise_.ndim))
        if isinstance(space, Discrete):
            explore_key, pick_key = jax.random.split(key)
            explore = jax.random.uniform(explore_key, action.shape) < noise_
            random = jax.random.randint(pick_key, action.shape, 0, space.n, action.dtype)
            return jnp.where(explore, random, action).astype(jnp.int32)
        action = action + noise_ * jax.random.normal(key, action.shape, action.dtype)
        return jnp.clip(action, space.low, space.high).astype(jnp.float32)

    def step(carry, obs, first, key):
        act_key, noise_key = jax.random.split(key)
        carry, action = policy(carry, normalize(obs), first, act_key)
        return carry, perturb(action, noise_key)

    return step


def _with_opening(policy: PolicyStep, opening: Any) -> PolicyStep:
    """``policy``, but each episode's first ``len(opening)`` actions are ``opening``'s (the same
    for every env and task); the carry is ``(policy's carry, step within the episode [B])``."""
    opening = jnp.asarray(opening, jnp.float32)

    def step(carry, obs, first, key):
        inner, t = carry
        t = jnp.where(first, 0, t)
        inner, action = policy(inner, obs, first, key)
        scripted = opening[jnp.minimum(t, opening.shape[0] - 1)].astype(action.dtype)
        action = jnp.where(row_mask(t < opening.shape[0], action), scripted, action)
        return (inner, t + 1), action

    return step


def _record(step: Step) -> dict:
    return {
        "obs": step.obs.astype(jnp.float32),
        "actions": step.action,
        "rewards": step.reward.astype(jnp.float32),
        "terminated": step.terminated,
        "truncated": step.truncated,
    }


def rollout(
    actor: Actor,
    state: Any,
    key: jax.Array,
    num_envs: int,
    max_len: int,
    noise: Any = 0.0,
    deterministic: bool = False,
    opening: Any = None,
    params: Any = None,
) -> tuple[Trajectories, jax.Array]:
    """First episode of each of ``num_envs`` envs under one seed's learner ``state`` (jittable).

    Returns ``Trajectories`` of shape ``[num_envs, max_len]`` and the env's own episode returns
    ``[num_envs]`` (``EpisodeStatistics``; NaN where ``max_len`` cut the episode, which is then
    recorded as truncated at its last step). ``noise``: epsilon-random actions (discrete) or
    Gaussian noise of that std (continuous; actions are then clipped to the space), a number or
    one per env. ``params``: env params to act in instead of the learner's own (one task of
    a family, for a goal-conditioned learner). ``opening`` (``[K, *action shape]``): every
    episode's first K actions before the policy takes over, exact at every noise level (a
    scripted probe that an agent repeats exactly at evaluation, Meta-DT's ``meta.opening``;
    measured: a noisy opening, which an agent imitating it would reproduce only roughly, did not
    help Meta-DT, docs/results.md).
    """
    venv, own_params = actor.env(state, num_envs)
    params = own_params if params is None else params
    normalize = lambda obs: obs
    if isinstance(venv, NormalizeObservation):  # record raw observations, act on normalized ones
        normalize, venv = venv.stats.normalize, venv.env
    space = venv.action_space(params)
    policy, carry = actor.policy(state, deterministic), actor.initial_carry(num_envs)
    policy = _perturbed(policy, space, noise, normalize)
    if opening is not None and len(opening):
        policy, carry = _with_opening(policy, opening), (carry, jnp.zeros(num_envs, jnp.int32))
    out = seqrl_rollout(policy, carry, venv, params, key, max_len, record=_record)
    steps, finished, last = out["steps"], out["finished"], out["last_obs"]
    # episodes still running after max_len steps end there, truncated
    cut = ~finished
    truncated = steps["truncated"].at[:, max_len - 1].set(steps["truncated"][:, max_len - 1] | cut)
    traj = Trajectories(
        obs=steps["obs"],
        actions=steps["actions"].astype(jnp.int32 if isinstance(space, Discrete) else jnp.float32),
        rewards=steps["rewards"],
        terminated=steps["terminated"],
        truncated=truncated,
        lengths=jnp.where(cut, max_len, out["lengths"]),
        final_obs=jnp.where(row_mask(cut, last), last, out["final_obs"]).astype(jnp.float32),
    )
    return traj, out["returns"]


# ---------------------------------------------------------------------------------------------
# A run's checkpoints
# ---------------------------------------------------------------------------------------------


def open_run(run_dir: str | Path) -> Run:
    """The run to collect from: it must act in an env (its trainer has an ``actor``)."""
    run = runs.open_run(run_dir)
    if run.trainer.single.actor is None:
        raise UserError(
            f"run {run.run_dir} was trained by {run.config.agent!r}, which does not act in an "
            "env; collect needs an online agent (ppo)"
        )
    return run


def _stack(states: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def medium_choice(steps: list[int], returns: Any, random: float) -> tuple[int, float]:
    """``(step, target)``: of the checkpoints before the latest (``steps`` ascending, their
    ``returns``), the one whose return is closest to ``target``, halfway between ``random`` and
    the latest's return (the earliest of equally close ones)."""
    returns = np.asarray(returns, np.float64)
    target = random + MEDIUM_FRACTION * (float(returns[-1]) - random)
    return steps[int(np.argmin(np.abs(returns[:-1] - target)))], target


def selection_key(seed: int) -> jax.Array:
    """The key the medium choice evaluates the checkpoints with (``collect(seed=...)``)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 7)


def select_medium(run: Run, key: jax.Array, log: Callable[[str], None]) -> tuple[int, dict]:
    """The kept checkpoint before the latest whose deterministic return is closest to halfway
    between a uniformly random policy and the latest checkpoint; returns (step, the evidence)."""
    if len(run.steps) < 2:
        raise UserError(
            f"run {run.run_dir} keeps one checkpoint (update {run.steps[0]}); medium needs an "
            "earlier one: pass --checkpoint STEP, or train with loop.num_chunks > 1 and "
            "loop.keep_checkpoints=0"
        )
    trainer, max_steps = run.trainer, run.config.loop.eval_max_steps

    def returns(states, key):
        per_checkpoint = jax.vmap(
            lambda s: trainer.evaluate(s, key, SELECTION_EPISODES, True)["returns"]
        )(states)
        any_state = jax.tree.map(lambda x: x[0], states)
        if run.num_tasks:  # a per-task run: the first task's learner
            any_state = jax.tree.map(lambda x: x[0], any_state)
        venv, params = run.trainer.single.actor.env(any_state, SELECTION_EPISODES)
        space = venv.action_space(params)

        def random_policy(carry, obs, first, key):
            return carry, jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))

        random = episode_returns(random_policy, (), venv, params, key, max_steps)["returns"]
        return jnp.nanmean(per_checkpoint, axis=1), jnp.nanmean(random)

    states = _stack([run.state(step) for step in run.steps])
    per_checkpoint, random = jax.jit(returns)(states, key)
    per_checkpoint, random = np.asarray(per_checkpoint), float(random)
    latest = float(per_checkpoint[-1])
    chosen, target = medium_choice(run.steps, per_checkpoint, random)
    log(
        f"medium: checkpoint {chosen} (return {per_checkpoint[run.steps.index(chosen)]:.2f}; "
        f"target {target:.2f}, halfway between random {random:.2f} and the latest, "
        f"update {run.steps[-1]}, {latest:.2f})"
    )
    evidence = {
        "rule": "closest to halfway between a random policy and the latest checkpoint",
        "episodes": SELECTION_EPISODES,
        "random_return": random,
        "target_return": target,
        "checkpoint_returns": {str(s): float(r) for s, r in zip(run.steps, per_checkpoint)},
    }
    return chosen, evidence


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def noise_levels(noise: float | Sequence[float]) -> tuple[float, ...]:
    """``noise`` as a tuple of levels (one number: one level)."""
    return tuple(float(n) for n in noise) if isinstance(noise, Sequence) else (float(noise),)


def _check_request(quality: str, episodes: int, noise: float | Sequence[float] | None) -> None:
    """The choices every collection checks before anything compiles."""
    if quality not in QUALITIES:
        raise UserError(f"quality {quality!r} is not one of {', '.join(QUALITIES)}")
    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    for level in () if noise is None else noise_levels(noise):
        if not (level >= 0 and math.isfinite(level)):
            raise UserError(f"noise must be a finite number >= 0, got {level}")
    if noise is not None and not noise_levels(noise):
        raise UserError("noise: give at least one level")


def _mixture(medium: Any, expert: Any, episodes: int) -> list[tuple[str, Any, int]]:
    """``mixed``: (role, what, episodes) of each policy, 70% medium and 30% expert."""
    n_medium = round(MIXED_MEDIUM_FRACTION * episodes)
    plan = [("medium", medium, n_medium), ("expert", expert, episodes - n_medium)]
    return [part for part in plan if part[2] > 0]


def _plan(run: Run, quality: str, checkpoint: int | None, episodes: int, seed: int, log):
    """``([(role, checkpoint step, episodes)], medium selection evidence or None)``."""
    latest = run.steps[-1]
    if quality == "expert":
        return [("expert", latest if checkpoint is None else checkpoint, episodes)], None
    medium, selection = checkpoint, None
    if medium is None:
        medium, selection = select_medium(run, selection_key(seed), log)
    if quality == "medium":
        return [("medium", medium, episodes)], selection
    return _mixture(medium, latest, episodes), selection


def strip_task(traj: Trajectories, width: int) -> Trajectories:
    """``traj`` without the last ``width`` entries of each observation (the true task that a
    goal-conditioned learner sees and no offline agent may)."""
    return traj.replace(obs=traj.obs[..., :-width], final_obs=traj.final_obs[..., :-width])


def _gather(
    run: Run,
    plan: list,
    seed: int,
    max_len: int,
    noise: tuple,
    deterministic: bool,
    latest,
    opening=None,
):
    """Every part of ``plan`` rolled out: ``(Trajectories on the host, trimmed to the longest
    episode; per-episode metadata)``. One compiled program serves every part (same batch size,
    state as an argument); a per-task run collects each part's episodes per task, its learners
    vmapped. ``latest``: the latest checkpoint's state, already restored. ``noise``: the levels
    each task's episodes cycle through (episode i: ``noise[i % len(noise)]``); ``opening``:
    every episode's first actions (see :func:`rollout`)."""
    num_envs = max(count for _, _, count in plan)
    actor = run.trainer.single.actor
    lane_noise = np.asarray(noise, np.float32)[np.arange(num_envs) % len(noise)]

    def one_learner(state, key, params=None):
        return rollout(
            actor, state, key, num_envs, max_len, lane_noise, deterministic, opening, params
        )[0]

    width = run.observed_task_width
    if run.num_tasks:
        tasks = run.task_indices()
        program = jax.jit(lambda s, k: jax.vmap(one_learner)(s, jax.random.split(k, len(tasks))))
    elif width:  # one goal-conditioned learner, run on every task of the family in turn
        family = run.family
        tasks = list(range(family.num_train + family.num_test))
        params = family.single_task_params(family.split("all"))

        def every_task(s, k):
            keys = jax.random.split(k, len(tasks))
            return strip_task(jax.vmap(lambda p, k: one_learner(s, k, p))(params, keys), width)

        program = jax.jit(every_task)
    else:
        tasks = [None]
        program = jax.jit(lambda s, k: jax.tree.map(lambda x: x[None], one_learner(s, k)))
    parts, episode_metadata = [], []
    for i, (role, step, count) in enumerate(plan):
        state = latest if step == run.steps[-1] else run.state(step)
        traj = program(state, jax.random.fold_in(jax.random.PRNGKey(seed), i))
        # [tasks, num_envs, ...] -> the first `count` episodes of each task
        parts.append(
            jax.tree.map(lambda x, c=count: np.asarray(x[:, :c]).reshape(-1, *x.shape[2:]), traj)
        )
        for task in tasks:
            extra = {} if task is None else {"task": task}
            episode_metadata += [
                {"checkpoint": step, "policy": role, "noise": float(lane_noise[i]), **extra}
                for i in range(count)
            ]
    host = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    longest = int(host.lengths.max())
    names = ("obs", "actions", "rewards", "terminated", "truncated")
    return host.replace(**{k: getattr(host, k)[:, :longest] for k in names}), episode_metadata


def _save(output, trajectories, meta: DatasetMeta, episode_metadata, description, log) -> Path:
    """Writes the dataset and says what it holds."""
    path = save_dataset(
        output, trajectories, meta, episode_metadata=episode_metadata, description=description
    )
    log(f"dataset: {path}")
    return path


def check_opening(opening: Any, space: Any) -> np.ndarray | None:
    """``opening`` as a ``[K, *action shape]`` array, or None when empty; a UserError unless
    the actions are continuous and every opening action lies in the action space."""
    if opening is None or not len(opening):
        return None
    if isinstance(space, Discrete):
        raise UserError("opening: scripted opening actions need a continuous action space")
    try:
        actions = np.asarray(opening, np.float32)
    except ValueError:
        raise UserError("opening: every action must have the same length") from None
    if actions.shape[1:] != tuple(space.shape):
        raise UserError(
            f"opening: each action must have shape {tuple(space.shape)}, got {actions.shape[1:]}"
        )
    low, high = np.asarray(space.low), np.asarray(space.high)
    if not (np.isfinite(actions).all() and (actions >= low).all() and (actions <= high).all()):
        raise UserError(f"opening: actions must lie in the action space [{low}, {high}]")
    return actions


def _open_checked(run_dir, checkpoint: int | None, noise: tuple[float, ...]):
    """``(run, its latest state, venv, env params)``: the run, the env its policy acts in, the
    request checked against them."""
    run = open_run(run_dir)
    if checkpoint is not None and checkpoint not in run.steps:
        kept = ", ".join(str(s) for s in run.steps)
        raise UserError(f"run {run.run_dir} has no checkpoint {checkpoint}; kept: {kept}")
    latest_state = run.state(run.steps[-1])
    lane = jax.tree.map(lambda x: x[0], latest_state) if run.num_tasks else latest_state
    venv, params = run.trainer.single.actor.env(lane, 1)
    if isinstance(venv.action_space(params), Discrete) and max(noise) > 1:
        raise UserError(f"noise is an epsilon for discrete actions: must be <= 1, got {max(noise)}")
    return run, latest_state, venv, params


def _recorded_space(run: Run, venv: Any, params: Any) -> Any:
    """The observation space of what is recorded: a goal-conditioned learner's without the
    task."""
    if run.observed_task_width:
        return run.family.env.observation_space(params)  # the family inside TaskObserved
    return venv.observation_space(params)


def _dataset_info(run, quality, plan, selection, episode_metadata, **how) -> dict:
    """The dataset's ``info``: where it came from and how it was collected (``how``: noise,
    opening, seed, ..., and the return statistics)."""
    info = {
        "algorithm": f"seqrl collect ({run.config.agent})",
        "run_dir": str(run.run_dir.absolute()),
        "agent": run.config.agent,
        "env_kwargs": dict(run.config.env_kwargs),
        "quality": quality,
        "checkpoints": {role: step for role, step, _ in plan},
        "episodes_per_checkpoint": {role: count for role, _, count in plan},
        **how,
        "num_episodes": len(episode_metadata),
    }
    if quality == "mixed":
        info["mixture"] = (
            f"{MIXED_MEDIUM_FRACTION:.0%} medium + {1 - MIXED_MEDIUM_FRACTION:.0%} expert"
        )
    if selection is not None:
        info["medium_selection"] = selection
    if run.observed_task_width:  # a goal-conditioned learner: the task is never recorded
        info["env_kwargs"].pop("observe_task")
        info["goal_conditioned"] = True
    if run.num_tasks or run.observed_task_width:  # each episode's task: its index into the
        info["task_split"] = run.config.tasks if run.num_tasks else "all"  # split("all")
        info["episode_tasks"] = [m["task"] for m in episode_metadata]
    return info


def collect(
    run_dir: str | Path,
    episodes: int,
    output: str | Path,
    *,
    quality: str = "expert",
    noise: float | Sequence[float] = 0.0,
    checkpoint: int | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    deterministic: bool = False,
    opening: Sequence[Sequence[float]] | None = None,
    log: Callable[[str], None] = print,
) -> CollectResult:
    """Rolls out a trained run (seed index 0) for ``episodes`` episodes and writes a Minari
    dataset at ``output`` (a directory named ``NAME-vVERSION``; see :mod:`seqrl.data`).

    ``checkpoint`` replaces the automatic choice: the latest for ``expert``, the medium one for
    ``medium`` and ``mixed``. ``max_steps`` caps episodes (needed when the env's params have no
    ``max_steps_in_episode``). Actions are sampled from the policy unless ``deterministic``.
    ``noise``: one level, or several that each task's episodes cycle through (exploratory
    data, e.g. ``(0, 0.5, 1)``; each episode's level is in its metadata). ``opening``: the
    first actions of every episode, the same for all (continuous actions; e.g. a fixed probe,
    so that data from experts who know their task also shows a task-independent exploration
    before the exploitation); the policy acts from the step after.
    """
    from seqrl.runtime import configure_jax

    # CHECK everything a user can get wrong before anything compiles
    _check_request(quality, episodes, noise)
    levels = noise_levels(noise)
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max_steps must be >= 1, got {max_steps}")
    output = check_output_path(output)
    configure_jax()
    run, latest_state, venv, params = _open_checked(run_dir, checkpoint, levels)
    action_space = venv.action_space(params)
    opening = check_opening(opening, action_space)
    max_len = max_steps or time_limit(params)
    if max_len is None:
        raise UserError(f"env {run.config.env} has no time limit in its params: pass --max-steps N")

    # CHOOSE the checkpoints, COLLECT, WRITE
    plan, selection = _plan(run, quality, checkpoint, episodes, seed, log)
    host, episode_metadata = _gather(
        run, plan, seed, max_len, levels, deterministic, latest_state, opening
    )
    trajectories = jax.tree.map(jnp.asarray, host)
    stats = trajectories.return_stats()
    info = _dataset_info(
        run,
        quality,
        plan,
        selection,
        episode_metadata,
        noise=levels[0] if len(levels) == 1 else list(levels),
        deterministic=deterministic,
        opening=[] if opening is None else opening.tolist(),
        seed=seed,
        max_steps=max_len,
        num_steps=trajectories.num_steps,
        **stats,
    )
    meta = DatasetMeta(run.config.env, _recorded_space(run, venv, params), action_space, info=info)
    checkpoints = ", ".join(f"{role} {step}" for role, step, _ in plan)
    log(
        f"collected {len(episode_metadata)} episodes"
        + (
            f" ({episodes} per task x {len(set(info['episode_tasks']))} tasks)"
            if "episode_tasks" in info
            else ""
        )
        + f", {trajectories.num_steps} steps, return "
        f"{stats['return_mean']:.2f} +- {stats['return_std']:.2f} ({quality}: {checkpoints})"
    )
    description = f"{quality} data for {run.config.env} from {run.run_dir} ({checkpoints})"
    path = _save(output, trajectories, meta, episode_metadata, description, log)
    return CollectResult(path, trajectories, meta)


def collect_scripted(
    env: str,
    episodes: int,
    output: str | Path,
    *,
    quality: str = "expert",
    noise: float | None = None,
    seed: int = 0,
    env_kwargs: dict | None = None,
    log: Callable[[str], None] = print,
) -> CollectResult:
    """``episodes`` episodes per task of a host-side task family's scripted policy (Meta-World
    ML1: ``meta/ML1-reach``) into a Minari dataset at ``output``, every episode tagged with its
    task (``info["episode_tasks"]``, global task indices, train then test).

    Gaussian action noise of std ``noise`` (default: the family's for ``quality``: expert 0.1,
    medium 1.0) is added to the scripted action, then clipped; ``mixed`` = 70% of each task's
    episodes at the medium noise and 30% at the expert noise.
    """
    from seqrl.envs import make_raw

    _check_request(quality, episodes, noise)
    family = make_raw(env, **(env_kwargs or {}))
    if not hasattr(family, "scripted_action"):
        raise UserError(
            f"{env} has no scripted policy: collect from a trained run instead "
            "(seqrl collect RUN_DIR ...)"
        )
    if quality == "mixed" and noise is not None:
        raise UserError(
            "--noise sets one policy's noise: with --quality mixed the scripted episodes use the "
            "medium and expert noises (1.0 / 0.1); choose expert or medium to set it"
        )
    output = check_output_path(output)
    from seqrl.envs.meta.metaworld import NOISE

    if quality == "mixed":
        plan = _mixture(NOISE["medium"], NOISE["expert"], episodes)
    else:
        plan = [(quality, NOISE[quality] if noise is None else noise, episodes)]
    tasks = np.asarray(family.split("all"))
    key = jax.random.PRNGKey(seed)
    parts, episode_metadata = [], []
    for role, std, count in plan:
        for _ in range(count):
            key, sub = jax.random.split(key)
            _, traj, _ = family.rollout(tasks, sub, ("scripted", std), None, None)
            parts.append(traj)
            episode_metadata += [{"policy": role, "noise": std, "task": int(t)} for t in tasks]
    host = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    trajectories = rollout_trajectories(host, family.episode_length)
    n, length = host["rewards"].shape
    stats = trajectories.return_stats()
    success = float((host["success"].max(1) > 0).mean())
    info = {
        "algorithm": f"seqrl collect (scripted: {family.oracle_name})",
        "env_kwargs": dict(env_kwargs or {}),
        "quality": quality,
        "noise_per_policy": {role: std for role, std, _ in plan},
        "episodes_per_policy": {role: count for role, _, count in plan},
        "seed": seed,
        "max_steps": int(length),
        "num_episodes": int(n),
        "num_steps": trajectories.num_steps,
        "success_rate": success,
        "task_split": "all",
        "episode_tasks": [m["task"] for m in episode_metadata],
        **stats,
    }
    meta = DatasetMeta(env, family.observation_space(), family.action_space(), info=info)
    log(
        f"collected {n} episodes ({episodes} per task x {len(tasks)} tasks), "
        f"{trajectories.num_steps} steps, return {stats['return_mean']:.1f} +- "
        f"{stats['return_std']:.1f}, success {success:.0%} ({quality})"
    )
    description = f"{quality} data for {env} from its scripted policy (action noise {plan})"
    path = _save(output, trajectories, meta, episode_metadata, description, log)
    return CollectResult(path, trajectories, meta)


__all__ = [
    "CollectResult",
    "collect",
    "collect_scripted",
    "open_run",
    "rollout",
    "select_medium",
    "time_limit",
]
