"""Return and advantage estimators shared by the agents."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation (Schulman et al. 2016) over time-major ``[T, ...]``.

    ``next_values[t]`` is V of the observation step t really led to (the final observation of an
    episode that ended at t, before any auto-reset). It is dropped where the episode
    *terminated* (no future), kept where it was *truncated* (a time limit is not a terminal
    state), and ``done = terminated | truncated`` stops the advantage recursion at the boundary:

        delta_t = r_t + gamma (1 - terminated_t) V'_t - V_t
        A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}

    Returns ``(advantages, value_targets = advantages + values)``.
    """
    not_terminated = 1.0 - terminated.astype(values.dtype)
    not_done = 1.0 - done.astype(values.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values

    def backward(carry, x):
        delta, nd = x
        advantage = delta + gamma * gae_lambda * nd * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(values[0]), (deltas, not_done), reverse=True
    )
    return advantages, advantages + values


def returns_to_go(rewards: jax.Array, lengths: jax.Array) -> jax.Array:
    """``rtg[n, t] = sum_{t' >= t} r[n, t']`` over the valid steps ``t < lengths[n]`` of padded
    ``rewards[N, L]`` (zero past the end)."""
    valid = jnp.arange(rewards.shape[1])[None, :] < lengths[:, None]
    r = jnp.where(valid, rewards, 0.0)
    return jnp.where(valid, jnp.cumsum(r[:, ::-1], axis=1)[:, ::-1], 0.0)
