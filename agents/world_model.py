"""Meta-DT's context world model (Wang et al., "Meta-DT", NeurIPS 2024).

A context encoder reads the ``h`` transitions (s, a, r) BEFORE step t of the same episode and
returns a task vector z_t; decoders predict the reward r_t from (s_t, a_t, s_{t+1}, z_t) and the
next state s_{t+1} from (s_t, a_t, z_t). Trained on multi-task data, z disentangles the task
from the behaviour that produced the data; the prediction error then tells which segments of an
agent's own history are most informative about the task (the self-guided prompt).

The context of step t is the same in training and at test time: the up to ``h`` transitions
before t, left-padded with zeros and masked (the reference code trains on partial histories
but feeds an all-zero context for the first h test steps; here both see the same thing).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from seqrl.agents.dt import take_steps
from seqrl.config import option


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    horizon: int = option(4, "context length h: transitions before step t the encoder reads", ge=1)
    latent_dim: int = option(16, "task vector z size", ge=1)
    embed_dim: int = option(16, "per-field embedding of s, a, r before the GRU", ge=1)
    context_actions: bool = option(
        True,
        "the encoder reads the context's actions (the reference); false: only states and "
        "rewards, so z cannot copy the behaviour policy's actions (which reveal the task in "
        "expert data and are the agent's own at test time)",
    )
    context_next_state: bool = option(False, "the encoder also reads each transition's s'")
    gru_dim: int = option(128, "GRU width", ge=1)
    hidden_dim: int = option(128, "decoder MLP width (two layers)", ge=1)
    state_loss_weight: float = option(1.0, "weight of the next-state loss (0: reward only)", ge=0)
    decode: Literal["step", "task"] = option(
        "step",
        "what the decoders predict from z_t: 'step' the transition t itself (the reference); "
        "'task' `queries` transitions drawn from anywhere in the same task's training data, so z "
        "must carry the task (predicting r_t from the context's last reward and heading needs no "
        "task inference when the data moves straight at the goal)",
    )
    queries: int = option(8, "transitions decoded per context when decode is 'task'", ge=1)
    freeze_at: int = option(
        0,
        "0: z_t from the h transitions before every step t (the reference); T > 0: from step T "
        "on z stays z_T (transitions T-h .. T-1), in training and acting alike. With a scripted "
        "probe of T = h steps (meta.opening) z reads only the probe, so the agent's own later "
        "behaviour, unlike the data's, cannot move it",
        ge=0,
    )
    steps: int = option(5000, "gradient steps (trained before the DT, inside init)", ge=1)
    batch_size: int = option(128, "transitions per step", ge=1)
    lr: float = option(1e-3, "Adam learning rate", gt=0)


@struct.dataclass
class Context:
    """The ``h`` transitions before a step (oldest first), left-padded: ``mask`` 1 where real."""

    obs: jax.Array  # [..., h, S]
    actions: jax.Array  # [..., h, A] (discrete: one-hot)
    rewards: jax.Array  # [..., h]
    mask: jax.Array  # [..., h]
    next_obs: jax.Array  # [..., h, S]


class ContextEncoder(nn.Module):
    latent_dim: int = 16
    embed_dim: int = 16
    gru_dim: int = 128
    use_actions: bool = True
    use_next_obs: bool = False

    @nn.compact
    def __call__(self, ctx: Context) -> jax.Array:
        lead = ctx.rewards.shape[:-1]
        h = ctx.rewards.shape[-1]
        flat = lambda x: x.reshape(-1, h, *x.shape[len(lead) + 1 :])
        s = nn.relu(nn.Dense(self.embed_dim, name="embed_state")(flat(ctx.obs)))
        a = nn.relu(nn.Dense(self.embed_dim, name="embed_action")(flat(ctx.actions)))
        r = nn.relu(nn.Dense(self.embed_dim, name="embed_reward")(flat(ctx.rewards)[..., None]))
        fields = [s, a, r] if self.use_actions else [s, r]
        if self.use_next_obs:
            fields.append(
                nn.relu(nn.Dense(self.embed_dim, name="embed_next_state")(flat(ctx.next_obs)))
            )
        x = jnp.concatenate(fields, axis=-1)
        mask = flat(ctx.mask)
        cell = nn.GRUCell(self.gru_dim, name="gru")
        carry = jnp.zeros((x.shape[0], self.gru_dim), x.dtype)
        for i in range(h):  # h is small (4): unrolled; padded steps leave the state as it was
            new, _ = cell(carry, x[:, i])
            carry = jnp.where(mask[:, i, None] > 0, new, carry)
        z = nn.Dense(self.latent_dim, name="to_latent")(carry)
        return z.reshape(*lead, self.latent_dim)


def _mlp(hidden: int, out: int, name: str) -> nn.Module:
    return nn.Sequential(
        [nn.Dense(hidden), nn.relu, nn.Dense(hidden), nn.relu, nn.Dense(out)], name=name
    )


class WorldModel(nn.Module):
    """``(ctx, s, a, s') -> (z, r_hat, s'_hat)``; ``method=WorldModel.encode`` gives z alone and
    ``method=WorldModel.errors`` the per-step prediction errors."""

    config: WorldModelConfig
    obs_dim: int

    def setup(self):
        c = self.config
        self.encoder = ContextEncoder(
            c.latent_dim, c.embed_dim, c.gru_dim, c.context_actions, c.context_next_state
        )
        self.reward_decoder = _mlp(c.hidden_dim, 1, "reward_decoder")
        self.state_decoder = _mlp(c.hidden_dim, self.obs_dim, "state_decoder")

    def encode(self, ctx: Context) -> jax.Array:
        return self.encoder(ctx)

    def decode(self, z, obs, actions, next_obs):
        """``(r_hat, s'_hat)`` of a transition under task vector ``z``."""
        r_hat = self.reward_decoder(jnp.concatenate([obs, actions, next_obs, z], -1))[..., 0]
        s_hat = self.state_decoder(jnp.concatenate([obs, actions, z], -1))
        return r_hat, s_hat

    def __call__(self, ctx: Context, obs, actions, next_obs):
        z = self.encoder(ctx)
        return (z, *self.decode(z, obs, actions, next_obs))

    def errors(self, ctx: Context, obs, actions, rewards, next_obs):
        """Per-step error |r_hat - r| (+ weight * mean |s'_hat - s'|): what the self-guided
        prompt maximizes."""
        _, r_hat, s_hat = self(ctx, obs, actions, next_obs)
        err = jnp.abs(r_hat - rewards)
        if self.config.state_loss_weight > 0:
            err = err + self.config.state_loss_weight * jnp.abs(s_hat - next_obs).mean(-1)
        return err


def context_at(
    obs, actions, rewards, next_obs, t: jax.Array, horizon: int, freeze_at: int = 0
) -> Context:
    """The context of step ``t`` of ONE episode (arrays ``[L, ...]``): transitions t-h .. t-1
    (with ``freeze_at`` T > 0: those of step min(t, T))."""
    if freeze_at:
        t = jnp.minimum(t, freeze_at)
    j = t - horizon + jnp.arange(horizon)
    valid = j >= 0
    jj = jnp.clip(j, 0, obs.shape[0] - 1)
    take = lambda x: take_steps(x, jj, valid)
    return Context(
        take(obs), take(actions), take(rewards), valid.astype(jnp.float32), take(next_obs)
    )


def train_world_model(
    model: WorldModel,
    key: jax.Array,
    obs,
    actions,
    rewards,
    next_obs,
    lengths,
    episodes: jax.Array,
    config: WorldModelConfig,
    tasks: jax.Array | None = None,
):
    """Trains ``model`` on the transitions of ``episodes`` (indices into ``[N, L]`` arrays;
    ``actions`` one-hot for discrete) with Adam; jittable. ``tasks`` (``[N]`` task of each
    episode) is needed for ``decode: task``. Returns (params, losses)."""
    weights = lengths[episodes].astype(jnp.float32)
    weights = weights / weights.sum()
    tx = optax.adam(config.lr)
    steps_of = lambda key, ep: jnp.floor(jax.random.uniform(key, ep.shape) * lengths[ep]).astype(
        jnp.int32
    )
    if config.decode == "task":
        if tasks is None:
            raise ValueError("decode: task needs the task of every episode")
        order = jnp.argsort(tasks[episodes])
        sorted_tasks = tasks[episodes][order]

    def queries(key, ep):
        """``config.queries`` transitions per context, each from a random episode of its task."""
        k_ep, k_t = jax.random.split(key)
        task = jnp.repeat(tasks[ep][:, None], config.queries, axis=1)
        lo = jnp.searchsorted(sorted_tasks, task, side="left")
        hi = jnp.searchsorted(sorted_tasks, task, side="right")
        pick = lo + jnp.floor(jax.random.uniform(k_ep, task.shape) * (hi - lo)).astype(jnp.int32)
        q_ep = episodes[order[pick]]
        q_t = steps_of(k_t, q_ep)
        return obs[q_ep, q_t], actions[q_ep, q_t], rewards[q_ep, q_t], next_obs[q_ep, q_t]

    def batch(key):
        k_ep, k_t, k_q = jax.random.split(key, 3)
        ep = episodes[jax.random.choice(k_ep, episodes.shape[0], (config.batch_size,), p=weights)]
        t = steps_of(k_t, ep)
        ctx = jax.vmap(
            lambda e, tt: context_at(
                obs[e], actions[e], rewards[e], next_obs[e], tt, config.horizon, config.freeze_at
            )
        )(ep, t)
        target = (obs[ep, t], actions[ep, t], rewards[ep, t], next_obs[ep, t])
        return ctx, target if config.decode == "step" else queries(k_q, ep)

    def loss_fn(params, b):
        ctx, (s, a, r, s2) = b
        if config.decode == "task":  # every context's z decodes its task's query transitions
            z = model.apply(params, ctx, method=WorldModel.encode)
            z = jnp.broadcast_to(z[:, None], (*r.shape, z.shape[-1]))
            r_hat, s_hat = model.apply(params, z, s, a, s2, method=WorldModel.decode)
        else:
            _, r_hat, s_hat = model.apply(params, ctx, s, a, s2)
        return jnp.mean((r_hat - r) ** 2) + config.state_loss_weight * jnp.mean((s_hat - s2) ** 2)

    init_key, key = jax.random.split(key)
    ctx, (s, a, _, s2) = batch(init_key)
    if config.decode == "task":  # one query per context: the shapes ``__call__`` takes
        s, a, s2 = (x[:, 0] for x in (s, a, s2))
    params = model.init(init_key, ctx, s, a, s2)
    opt_state = tx.init(params)

    def step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, batch(key))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(
        step, (params, opt_state), jax.random.split(key, config.steps)
    )
    return params, losses
