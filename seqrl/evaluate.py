"""The one on-device episode rollout (:func:`rollout`): vectorized envs step under a policy
inside a ``while_loop`` until each has finished its first episode, with optional per-step
recording. It serves evaluation (:func:`episode_returns`, PPO's and the DT's), dataset
collection (``seqrl.collection``) and the task families' lanes (:func:`lane_rollout`: one
episode per lane, each lane its own task, for meta-RL evaluation and the references).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqrl.envs.core import EpisodeStatistics
from seqrl.trainer import PolicyStep


class Step(NamedTuple):
    """One env step of every copy, as a recorder sees it (``[B, ...]`` each)."""

    obs: jax.Array  # the observation acted on
    action: jax.Array  # the action the env received
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array  # where the step led (before any auto-reset)
    active: jax.Array  # the copy is still in its first episode


def row_mask(mask: jax.Array, x: jax.Array) -> jax.Array:
    """``mask[B]`` broadcast against ``x[B, ...]``."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def rollout(
    policy: PolicyStep,
    policy_carry: Any,
    venv: Any,
    env_params: Any,
    key: jax.Array,
    max_steps: int,
    episodes_per_trial: int | None = None,
    *,
    policy_takes_reward: bool = False,
    observe: Callable | None = None,
    record: Callable[[Step], Any] | None = None,
) -> dict[str, Any]:
    """The first episode of each of ``venv``'s copies, ``max_steps`` steps at most (jittable).

    ``venv`` is vectorized with episode statistics in its info (``make_vec``, or the lanes of
    :func:`lane_rollout`). ``policy_takes_reward``: the policy also gets the previous step's
    reward, ``policy(carry, obs, first, key, reward)``. ``observe(carry, action, reward,
    next_obs) -> carry`` runs after every step. ``record(step) -> pytree of [B, ...]`` is kept
    for every step: ``[B, max_steps, ...]``, zero where a copy's first episode had ended.

    Returns ``returns`` [B] (NaN for a copy still running after ``max_steps``), ``finished``,
    ``lengths`` (steps of the first episode; 0 if unfinished), ``final_obs`` (where the episode
    ended), ``last_obs``, ``carry`` (the policy's), ``steps`` (the records) and, for in-context
    envs (a trial of ``episodes_per_trial`` inner episodes), ``episode_returns`` [B, k].
    """
    k = episodes_per_trial or 1
    key, reset_key = jax.random.split(key)
    obs, env_state = venv.reset(reset_key, env_params)
    n = obs.shape[0]

    def advance(c):
        key, act_key, step_key = jax.random.split(c["key"], 3)
        extra = (c["reward"],) if policy_takes_reward else ()
        carry, action = policy(c["carry"], c["obs"], c["first"], act_key, *extra)
        obs, env_state, reward, term, trunc, info = venv.step(
            step_key, c["env_state"], action, env_params
        )
        next_obs = info.get("final_observation", obs)
        if observe is not None:
            carry = observe(carry, action, reward, next_obs)
        step = Step(c["obs"], action, reward, term, trunc, next_obs, ~c["finished"])
        return key, carry, obs, env_state, reward, info, step

    def cond(c):
        return jnp.logical_and(~jnp.all(c["finished"]), c["t"] < max_steps)

    def body(c):
        key, carry, obs, env_state, reward, info, step = advance(c)
        newly = jnp.logical_and(info["episode_done"], step.active)
        out = {
            "key": key,
            "carry": carry,
            "obs": obs,
            "env_state": env_state,
            "first": info["episode_done"],
            "finished": jnp.logical_or(c["finished"], info["episode_done"]),
            "returns": jnp.where(newly, info["episode_return"], c["returns"]),
            "lengths": jnp.where(newly, c["t"] + 1, c["lengths"]),
            "final_obs": jnp.where(row_mask(newly, obs), step.next_obs, c["final_obs"]),
            "reward": reward.astype(jnp.float32),
            "per_episode": _per_episode(c["per_episode"], info, step.active, k, episodes_per_trial),
            "steps": c["steps"],
            "t": c["t"] + 1,
        }
        if record is not None:
            out["steps"] = _write(c["steps"], c["t"], record(step), step.active)
        return out

    init = _loop_start(key, policy_carry, obs, env_state, k)
    if record is not None:  # buffers shaped like one step's records
        shapes = jax.eval_shape(lambda c: record(advance(c)[-1]), init)
        zeros = lambda s: jnp.zeros((n, max_steps, *s.shape[1:]), s.dtype)
        init["steps"] = jax.tree.map(zeros, shapes)
    final = jax.lax.while_loop(cond, body, init)
    out = {name: final[name] for name in ("returns", "finished", "lengths", "final_obs", "carry")}
    out["last_obs"], out["steps"] = final["obs"], final["steps"]
    if episodes_per_trial:
        out["episode_returns"] = final["per_episode"]
    return out


def _write(buffers: Any, t: jax.Array, rows: Any, active: jax.Array) -> Any:
    """``rows[B, ...]`` into step ``t`` of ``buffers[B, T, ...]``, zero where not ``active``."""
    put = lambda buf, x: buf.at[:, t].set(jnp.where(row_mask(active, x), x, jnp.zeros_like(x)))
    return jax.tree.map(put, buffers, rows)


def _loop_start(key, policy_carry, obs, env_state, k: int) -> dict:
    """The rollout loop's carry before the first step."""
    n = obs.shape[0]
    return {
        "key": key,
        "carry": policy_carry,
        "obs": obs,
        "env_state": env_state,
        "first": jnp.ones(n, jnp.bool_),
        "finished": jnp.zeros(n, jnp.bool_),
        "returns": jnp.full(n, jnp.nan, jnp.float32),
        "lengths": jnp.zeros(n, jnp.int32),
        "final_obs": obs,
        "reward": jnp.zeros(n, jnp.float32),
        "per_episode": jnp.full((n, k), jnp.nan, jnp.float32),
        "steps": (),
        "t": jnp.zeros((), jnp.int32),
    }


def _per_episode(per_episode, info, active, k: int, episodes_per_trial: int | None):
    """In-context envs: the return of each inner episode of the first trial, by index."""
    if not episodes_per_trial:
        return per_episode
    hit = jnp.logical_and(info["inner_episode_done"], active)[:, None]
    index = jax.nn.one_hot(info["episode_index"], k, dtype=jnp.bool_)
    return jnp.where(hit & index, info["inner_episode_return"][:, None], per_episode)


def episode_returns(*args, **kwargs) -> dict[str, jax.Array]:
    """Returns of the first episode of each of ``venv``'s copies: :func:`rollout` (the same
    arguments) reduced to ``{"returns": [num_envs]}``, NaN for copies still running after
    ``max_steps`` steps; in-context envs add ``"episode_returns": [num_envs,
    episodes_per_trial]``, the return per episode index."""
    out = rollout(*args, **kwargs)
    return {name: out[name] for name in ("returns", "episode_returns") if name in out}


# ---------------------------------------------------------------------------------------------
# Lanes: one episode per task (task families)
# ---------------------------------------------------------------------------------------------


def lane_params(family, tasks, per_task: int):
    """Single-task params for ``per_task`` lanes of each task (task-major)."""
    rep = jax.tree.map(lambda x: jnp.repeat(x, per_task, axis=0), tasks)
    return family.single_task_params(rep)


class Lanes:
    """A task family as a vectorized env whose copy ``i`` runs its own task ``params[i]``
    (no auto-reset: only the first episode of a lane is ever read). ``act_from_state(state) ->
    action``: a policy that reads the env state (the family's oracle) acts instead of the one
    the rollout is given."""

    def __init__(self, family: Any, params: Any, act_from_state: Callable | None = None):
        self.env, self.params = EpisodeStatistics(family), params
        self.num_lanes = int(jax.tree.leaves(params)[0].shape[0])
        self.act_from_state = act_from_state

    def reset(self, key: jax.Array, _params: Any = None):
        keys = jax.random.split(key, self.num_lanes)
        return jax.vmap(self.env.reset)(keys, self.params)

    def step(self, key: jax.Array, state: Any, action: jax.Array, _params: Any = None):
        keys = jax.random.split(key, self.num_lanes)
        if self.act_from_state is not None:
            action = jax.vmap(self.act_from_state)(state.env_state)
        return jax.vmap(self.env.step)(keys, state, action, self.params)


def _lane_record(step: Step) -> dict:
    return {
        "obs": step.obs,
        "actions": step.action,
        "rewards": step.reward,
        "next_obs": step.next_obs,
        "valid": step.active.astype(jnp.float32),
    }


def lane_rollout(family, params, key, act, observe, carry, length: int, act_from_state=None):
    """One episode per lane (lane ``i`` runs the task of ``params[i]``), ``length`` steps at
    most (jittable). ``act(carry, obs, first, key) -> (carry, action)``; ``observe(carry,
    action, reward, next_obs) -> carry``. Returns the carry, the trajectories ``{obs, actions,
    rewards, next_obs, valid}`` ([lanes, length, ...], zero past a lane's end) and ``returns``
    [lanes]. ``act_from_state``: see :class:`Lanes`."""
    lanes = Lanes(family, params, act_from_state)
    out = rollout(act, carry, lanes, None, key, length, observe=observe, record=_lane_record)
    traj = out["steps"]
    return out["carry"], traj, traj["rewards"].sum(1)
