"""On-device rollouts: vectorized episodes under a policy until each has finished one
(:func:`episode_returns`), and one episode per lane of a task family's tasks
(:func:`lane_rollout`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# (carry, obs[B], first[B], key) -> (carry, action[B])
PolicyStep = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]


def episode_returns(
    policy_step: PolicyStep,
    policy_carry: Any,
    venv: Any,
    env_params: Any,
    key: jax.Array,
    max_steps: int,
    episodes_per_trial: int | None = None,
    policy_takes_reward: bool = False,
) -> dict[str, jax.Array]:
    """Returns of the first episode of each of ``venv``'s copies (jittable).

    ``venv`` is a vectorized env built by ``make_vec`` (its info carries episode statistics).
    Gives ``{"returns": [num_envs]}``; copies still running after ``max_steps`` steps report NaN.
    For in-context envs (an episode is a trial of ``episodes_per_trial`` inner episodes) it adds
    ``"episode_returns": [num_envs, episodes_per_trial]``, the return per episode index.
    ``policy_takes_reward``: the policy also gets the reward of the previous step,
    ``policy_step(carry, obs, first, key, reward)`` (return-conditioned agents need it).
    """
    k = episodes_per_trial or 1
    key, reset_key = jax.random.split(key)
    obs, env_state = venv.reset(reset_key, env_params)
    n = obs.shape[0]

    def cond(c):
        return jnp.logical_and(~jnp.all(c["finished"]), c["t"] < max_steps)

    def body(c):
        key, act_key, step_key = jax.random.split(c["key"], 3)
        if policy_takes_reward:
            carry, action = policy_step(c["carry"], c["obs"], c["first"], act_key, c["reward"])
        else:
            carry, action = policy_step(c["carry"], c["obs"], c["first"], act_key)
        obs, env_state, reward, _, _, info = venv.step(step_key, c["env_state"], action, env_params)
        newly = jnp.logical_and(info["episode_done"], ~c["finished"])
        per_episode = c["per_episode"]
        if episodes_per_trial:
            hit = jnp.logical_and(info["inner_episode_done"], ~c["finished"])[:, None]
            index = jax.nn.one_hot(info["episode_index"], k, dtype=jnp.bool_)
            per_episode = jnp.where(hit & index, info["inner_episode_return"][:, None], per_episode)
        return {
            "per_episode": per_episode,
            "key": key,
            "carry": carry,
            "obs": obs,
            "first": info["episode_done"],
            "env_state": env_state,
            "finished": jnp.logical_or(c["finished"], info["episode_done"]),
            "returns": jnp.where(newly, info["episode_return"], c["returns"]),
            "reward": reward.astype(jnp.float32),
            "t": c["t"] + 1,
        }

    init = {
        "key": key,
        "carry": policy_carry,
        "obs": obs,
        "first": jnp.ones(n, jnp.bool_),
        "env_state": env_state,
        "finished": jnp.zeros(n, jnp.bool_),
        "returns": jnp.full(n, jnp.nan, jnp.float32),
        "reward": jnp.zeros(n, jnp.float32),
        "per_episode": jnp.full((n, k), jnp.nan, jnp.float32),
        "t": jnp.zeros((), jnp.int32),
    }
    final = jax.lax.while_loop(cond, body, init)
    out = {"returns": final["returns"]}
    if episodes_per_trial:
        out["episode_returns"] = final["per_episode"]
    return out


def lane_params(family, tasks, per_task: int):
    """Single-task params for ``per_task`` lanes of each task (task-major)."""
    rep = jax.tree.map(lambda x: jnp.repeat(x, per_task, axis=0), tasks)
    return family.single_task_params(rep)


def lane_rollout(family, params, key, act, observe, carry, length: int):
    """One episode per lane, ``length`` steps at most (jittable). ``act(carry, obs, t, key) ->
    (carry, action)``; ``observe(carry, action, reward, next_obs) -> carry``. Returns the carry,
    the trajectories ``{obs, actions, rewards, next_obs, valid}`` ([lanes, length, ...]) and
    ``returns`` [lanes]."""
    lanes = jax.tree.leaves(params)[0].shape[0]
    key, reset_key = jax.random.split(key)
    obs, state = jax.vmap(family.reset)(jax.random.split(reset_key, lanes), params)

    def step(c, t):
        carry, obs, state, alive, key = c
        key, act_key, step_key = jax.random.split(key, 3)
        carry, action = act(carry, obs, t, act_key)
        next_obs, state, reward, term, trunc, _ = jax.vmap(family.step)(
            jax.random.split(step_key, lanes), state, action, params
        )
        carry = observe(carry, action, reward, next_obs)
        rec = {
            "obs": obs,
            "actions": action,
            "rewards": reward * alive,
            "next_obs": next_obs,
            "valid": alive,
        }
        alive = alive * (1.0 - jnp.logical_or(term, trunc).astype(jnp.float32))
        return (carry, next_obs, state, alive, key), rec

    init = (carry, obs, state, jnp.ones(lanes), key)
    (carry, *_), traj = jax.lax.scan(step, init, jnp.arange(length))
    traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)
    return carry, traj, traj["rewards"].sum(1)
