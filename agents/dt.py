"""Decision Transformer (Chen et al., "Decision Transformer: Reinforcement Learning via Sequence
Modeling", NeurIPS 2021), trained offline on a dataset of trajectories.

Each step of a trajectory is three tokens (return-to-go R^, state s, action a), each linearly
embedded (a discrete action through an embedding table), plus a learned timestep embedding added
to all three, LayerNorm, then a GPT-style causal transformer (no positional embedding). The
action at step t is predicted from the output at the state token s_t, which attends only to
R^_{<=t}, s_{<=t}, a_{<t}. Any action head serves: categorical (cross entropy), deterministic
(MSE), Fourier (cross entropy over bins + its regularizer), tanh-Gaussian.

TRAIN: windows of K steps are sampled on device from a padded, device-resident dataset
(trajectories in proportion to their length, a uniform start inside the trajectory, the window
left-padded and masked where it runs past the end). EVALUATE: vmapped envs on device, each
keeping its last K steps as context; R^ starts at the target return and is decremented by each
reward (both divided by ``return_scale``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from seqrl import distributed
from seqrl.config import ConfigError, LoopConfig, devices_option, option
from seqrl.envs import make_vec
from seqrl.envs.spaces import Discrete
from seqrl.evaluate import episode_returns
from seqrl.heads import HEADS, head_for
from seqrl.returns import returns_to_go
from seqrl.trainer import Trainer, train_fn

# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DTConfig:
    context: int = option(20, "context length K (steps; 3 tokens each)", ge=1)
    embed_dim: int = option(128, "token width", ge=1)
    num_layers: int = option(3, "transformer blocks", ge=1)
    num_heads: int = option(1, "attention heads (must divide embed_dim)", ge=1)
    dropout: float = option(0.1, "dropout rate in training", ge=0, lt=1)
    batch_size: int = option(64, "windows per update", ge=1)
    lr: float = option(1e-4, "AdamW learning rate (after warm-up)", gt=0)
    warmup_steps: int = option(10_000, "linear learning-rate warm-up (updates)", ge=0)
    weight_decay: float = option(1e-4, "AdamW weight decay", ge=0)
    grad_clip: float = option(0.25, "global gradient norm clip", gt=0)
    return_scale: float = option(1000.0, "returns-to-go are divided by this", gt=0)
    target_return: float | None = option(
        500.0, "return-to-go the evaluation starts from (null: the best return in the data)"
    )
    max_timestep: int = option(1000, "size of the timestep embedding table", ge=1)
    normalize_states: bool = option(True, "standardize states with the dataset's statistics")
    head: Literal[HEADS] = option(
        "auto", "action head (auto: categorical for discrete, deterministic for continuous)"
    )
    fourier_frequencies: int = option(8, "Fourier head: frequencies N", ge=1)
    fourier_bins: int = option(64, "Fourier head: bins per continuous action dimension", ge=2)
    action_order: tuple[int, ...] | None = option(
        None, "Fourier head, discrete actions: the actions in bin order (neighbours alike)"
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Decision Transformer training run."""

    agent: Literal["dt"] = option("dt", "the algorithm")
    env: str = option("gymnax/CartPole-v1", "environment the agent is evaluated in")
    env_kwargs: dict = option({}, "keyword arguments for the environment's constructor")
    dataset: str = option("", "path of the dataset (a Minari dataset, see `seqrl collect`)")
    seed: int = option(0, "random seed", ge=0)
    num_seeds: int = option(1, "independent seeds trained in parallel (a vmap axis)", ge=1)
    num_envs: int = option(16, "parallel environments in evaluation rollouts", ge=1)
    devices: Literal["all"] | int = devices_option()
    total_updates: int = option(10_000, "gradient updates per seed", ge=1)
    dt: DTConfig = option(DTConfig(), "Decision Transformer hyperparameters")
    loop: LoopConfig = option(LoopConfig(), "host loop, checkpoints, evaluation")

    def validate(self) -> None:
        from seqrl.envs.registry import check_name

        check_name(self.env, key="env")
        if not self.dataset:
            raise ConfigError("config key 'dataset' is required: the path of a dataset")
        if self.dt.embed_dim % self.dt.num_heads:
            raise ConfigError(
                f"config key 'dt.num_heads' ({self.dt.num_heads}) must divide dt.embed_dim "
                f"({self.dt.embed_dim})"
            )


# ---------------------------------------------------------------------------------------------
# Data: padded trajectories on device, window sampling
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class WindowData:
    """What training reads (device arrays, an argument of the compiled update)."""

    obs: jax.Array  # [N, L, ...] normalized
    actions: jax.Array  # [N, L] int32 or [N, L, D]
    rtg: jax.Array  # [N, L] scaled returns-to-go
    lengths: jax.Array  # [N]
    weights: jax.Array  # [N] sampling probability (proportional to length)


def take_steps(x: jax.Array, steps: jax.Array, valid: jax.Array) -> jax.Array:
    """``x[steps]`` (steps of one trajectory ``x[L, ...]``) with the rows where ``valid`` is
    false zeroed: a window, left-padded."""
    x = x[steps]
    return jnp.where(valid.reshape(-1, *([1] * (x.ndim - 1))), x, jnp.zeros_like(x))


@struct.dataclass
class Window:
    obs: jax.Array  # [K, ...]
    actions: jax.Array
    rtg: jax.Array  # [K]
    timesteps: jax.Array  # [K]
    mask: jax.Array  # [K] 1 where the step is real


def sample_window(data: WindowData, index: jax.Array, start: jax.Array, context: int) -> Window:
    """The window of trajectory ``index`` from step ``start``: up to ``context`` steps forward,
    truncated at the trajectory's end and LEFT-padded to ``context`` (mask 0 on the padding)."""
    length = data.lengths[index]
    steps = jnp.minimum(context, length - start)
    pad = context - steps
    j = jnp.arange(context)
    valid = j >= pad
    t = jnp.clip(start + j - pad, 0, data.obs.shape[1] - 1)
    take = lambda x: take_steps(x[index], t, valid)
    return Window(
        obs=take(data.obs),
        actions=take(data.actions),
        rtg=take(data.rtg),
        timesteps=jnp.where(valid, t, 0),
        mask=valid.astype(jnp.float32),
    )


def sample_batch(key: jax.Array, data: WindowData, batch: int, context: int) -> Window:
    """``batch`` windows: trajectories in proportion to their length, uniform starts."""
    k_traj, k_start = jax.random.split(key)
    index = jax.random.choice(k_traj, data.lengths.shape[0], (batch,), p=data.weights)
    u = jax.random.uniform(k_start, (batch,))
    start = jnp.floor(u * data.lengths[index]).astype(jnp.int32)
    return jax.vmap(sample_window, in_axes=(None, 0, 0, None))(data, index, start, context)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Block(nn.Module):
    """A pre-LayerNorm GPT block."""

    embed_dim: int
    num_heads: int
    dropout: float

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array, train: bool, state_tokens_only: bool = False
    ) -> jax.Array:
        """``state_tokens_only``: compute outputs for the state tokens only (every third token,
        from 1), attending to all tokens. The last block needs nothing else: the action head
        reads the state tokens, so this skips two thirds of that block's queries and MLP."""
        attend = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dropout_rate=self.dropout, deterministic=not train
        )
        normed = nn.LayerNorm()(x)
        if state_tokens_only:
            x, queries, mask = x[:, 1::3], normed[:, 1::3], mask[:, :, 1::3]
        else:
            queries = normed
        x = x + nn.Dropout(self.dropout, deterministic=not train)(
            attend(queries, normed, mask=mask)
        )
        h = nn.Dense(4 * self.embed_dim)(nn.LayerNorm()(x))
        h = nn.Dense(self.embed_dim)(nn.gelu(h))
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class DecisionTransformer(nn.Module):
    """``(rtg[B, K], obs[B, K, ...], actions[B, K, ...], timesteps[B, K], mask[B, K]) ->``
    the action distribution at every step (from the state tokens)."""

    head: nn.Module
    num_actions: int | None  # discrete: the number of actions; continuous: None
    embed_dim: int = 128
    num_layers: int = 3
    num_heads: int = 1
    dropout: float = 0.1
    max_timestep: int = 1000

    @nn.compact
    def __call__(self, rtg, obs, actions, timesteps, mask, train: bool = False):
        b, k = rtg.shape
        d = self.embed_dim
        time = nn.Embed(self.max_timestep, d, name="embed_timestep")(
            jnp.clip(timesteps, 0, self.max_timestep - 1)
        )
        r = nn.Dense(d, name="embed_return")(rtg[..., None]) + time
        s = nn.Dense(d, name="embed_state")(obs.reshape(b, k, -1)) + time
        if self.num_actions is not None:
            a = nn.Embed(self.num_actions, d, name="embed_action")(actions.astype(jnp.int32))
        else:
            a = nn.Dense(d, name="embed_action")(actions.reshape(b, k, -1))
        a = a + time
        tokens = jnp.stack([r, s, a], axis=2).reshape(b, 3 * k, d)
        x = nn.LayerNorm(name="embed_norm")(tokens)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        token_mask = jnp.repeat(mask, 3, axis=1) > 0
        causal = jnp.tril(jnp.ones((3 * k, 3 * k), bool))
        attn_mask = causal[None, None] & token_mask[:, None, None, :]
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            x = Block(d, self.num_heads, self.dropout, name=f"block_{i}")(
                x, attn_mask, train, state_tokens_only=last
            )
        return self.head(nn.LayerNorm(name="final_norm")(x))  # x: the K state tokens


# ---------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class LearnerState:
    params: Any
    opt_state: Any
    key: jax.Array
    update_step: jax.Array
    obs_mean: jax.Array  # the dataset's state statistics (fixed)
    obs_std: jax.Array


def make_model(config: Config, action_space) -> DecisionTransformer:
    d = config.dt
    try:
        head = head_for(
            action_space,
            d.head,
            continuous="deterministic",  # the DT paper's MSE head
            fourier_frequencies=d.fourier_frequencies,
            fourier_bins=d.fourier_bins,
            action_order=d.action_order,
        )
    except ValueError as e:
        raise ConfigError(f"config key 'dt.head': {e}") from None
    return DecisionTransformer(
        head=head,
        num_actions=action_space.n if isinstance(action_space, Discrete) else None,
        embed_dim=d.embed_dim,
        num_layers=d.num_layers,
        num_heads=d.num_heads,
        dropout=d.dropout,
        max_timestep=d.max_timestep,
    )


def make_optimizer(d: DTConfig):
    """(AdamW with global-norm clipping, its learning-rate schedule: linear warm-up, then
    constant)."""
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, d.lr, max(d.warmup_steps, 1)), optax.constant_schedule(d.lr)],
        [max(d.warmup_steps, 1)],
    )
    tx = optax.chain(
        optax.clip_by_global_norm(d.grad_clip), optax.adamw(schedule, weight_decay=d.weight_decay)
    )
    return tx, schedule


def window_data(trajectories: Any, config: Config) -> tuple[WindowData, np.ndarray, np.ndarray]:
    """Device-resident training data and the state statistics from padded trajectories
    (``obs``, ``actions``, ``rewards``, ``lengths``)."""
    obs = jnp.asarray(trajectories.obs, jnp.float32)
    lengths = jnp.asarray(trajectories.lengths, jnp.int32)
    valid = np.arange(obs.shape[1])[None, :] < np.asarray(lengths)[:, None]
    flat = np.asarray(obs)[valid]
    mean = flat.mean(0) if config.dt.normalize_states else np.zeros(obs.shape[2:], np.float32)
    std = flat.std(0) + 1e-6 if config.dt.normalize_states else np.ones(obs.shape[2:], np.float32)
    rtg = returns_to_go(jnp.asarray(trajectories.rewards, jnp.float32), lengths)
    weights = np.asarray(lengths, np.float64) / float(np.sum(lengths))
    data = WindowData(
        obs=(obs - mean) / std,
        actions=jnp.asarray(trajectories.actions),
        rtg=rtg / config.dt.return_scale,
        lengths=lengths,
        weights=jnp.asarray(weights, jnp.float32),
    )
    return data, mean.astype(np.float32), std.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Internals:
    """The DT's own pieces (``trainer.internals``), for tests and notebooks: the model;
    ``policy_step(state, target_return, deterministic)``, the acting step with a rolling
    context; ``initial_context(batch)``, its empty context; ``action_distribution(state,
    windows)``, the predicted action distribution at every step of ``windows``."""

    model: Any
    policy_step: Any
    initial_context: Any
    action_distribution: Any


# identity equality and hash (eq=False): the fields hold device arrays and a dict-holding config,
# and the Trainer's fields are this object's bound methods
@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """One DT learner (one seed): the eval env, the dataset as the update reads it, the model
    and the optimizer, with the pure functions :func:`make_trainer` hands the loop as bound
    methods."""

    config: Config
    env: Any
    env_params: Any
    data: WindowData
    obs_mean: np.ndarray
    obs_std: np.ndarray
    model: DecisionTransformer
    tx: Any
    schedule: Any

    @classmethod
    def from_config(cls, config: Config, trajectories: Any | None = None) -> Learner:
        """``trajectories``: padded data (default: ``seqrl.data.load_dataset(config.dataset)``)."""
        if trajectories is None:
            from seqrl.data import load_dataset

            trajectories, _ = load_dataset(config.dataset)
        env = make_vec(config.env, config.num_envs, env_kwargs=config.env_kwargs)
        env_params = env.default_params
        action_space = env.action_space(env_params)
        data, obs_mean, obs_std = window_data(trajectories, config)
        if data.obs.shape[2:] != tuple(env.observation_space(env_params).shape):
            raise ConfigError(
                f"dataset {config.dataset}: observations of shape {data.obs.shape[2:]} do not "
                f"fit {config.env} ({env.observation_space(env_params).shape})"
            )
        model = make_model(config, action_space)
        tx, schedule = make_optimizer(config.dt)
        return cls(config, env, env_params, data, obs_mean, obs_std, model, tx, schedule)

    def init(self, key: jax.Array) -> LearnerState:
        key, init_key = jax.random.split(key)
        w = sample_batch(init_key, self.data, 1, self.config.dt.context)
        params = self.model.init(init_key, w.rtg, w.obs, w.actions, w.timesteps, w.mask)
        return LearnerState(
            params=params,
            opt_state=self.tx.init(params),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            obs_mean=jnp.asarray(self.obs_mean),
            obs_std=jnp.asarray(self.obs_std),
        )

    def loss(self, params, batch: Window, key: jax.Array):
        dist = self.model.apply(
            params,
            batch.rtg,
            batch.obs,
            batch.actions,
            batch.timesteps,
            batch.mask,
            train=True,
            rngs={"dropout": key},
        )
        log_prob = dist.log_prob(batch.actions)
        nll = -jnp.sum(log_prob * batch.mask) / jnp.maximum(batch.mask.sum(), 1.0)
        return nll + dist.aux_loss(), {"action_loss": nll}

    def update(self, state: LearnerState, data: WindowData) -> tuple[LearnerState, dict]:
        d = self.config.dt
        key, batch_key, drop_key = jax.random.split(state.key, 3)
        # the batch of windows is the data-parallel axis (sharded when the seeds are not)
        batch = distributed.constrain_batch(sample_batch(batch_key, data, d.batch_size, d.context))
        (loss, stats), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.params, batch, drop_key
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(
            params=params, opt_state=opt_state, key=key, update_step=state.update_step + 1
        )
        metrics = {"loss": loss, **stats, "grad_norm": optax.tree.norm(grads)}
        return state, {**metrics, "lr": self.schedule(state.update_step)}

    def action_distribution(self, state: LearnerState, windows: Window):
        """The predicted action distribution at every step of ``windows`` (``[B, K]``, in the
        units of ``trainer.data``: normalized states, scaled returns-to-go, e.g. from
        ``sample_batch``), as in evaluation (no dropout)."""
        w = windows
        return self.model.apply(state.params, w.rtg, w.obs, w.actions, w.timesteps, w.mask)

    def policy_step(self, state: LearnerState, target_return: float, deterministic: bool):
        """The on-device acting step with a rolling context of the last K steps."""
        d = self.config.dt

        def step(carry, obs, first, key, reward):
            keep = ~first[:, None]
            rtg_prev = carry["rtg"][:, -1]
            rtg_now = jnp.where(
                first, target_return / d.return_scale, rtg_prev - reward / d.return_scale
            )
            t_now = jnp.where(first, 0, carry["timesteps"][:, -1] + 1)

            def push(buf, new):  # drop the oldest step (everything on a new episode)
                buf = jnp.where(keep.reshape(keep.shape + (1,) * (buf.ndim - 2)), buf, 0)
                return jnp.concatenate([buf[:, 1:], new[:, None]], axis=1)

            obs_n = (obs - state.obs_mean) / state.obs_std
            carry = {
                "obs": push(carry["obs"], obs_n),
                "actions": push(carry["actions"], jnp.zeros_like(carry["actions"][:, 0])),
                "rtg": push(carry["rtg"], rtg_now),
                "timesteps": push(carry["timesteps"], t_now),
                "mask": push(carry["mask"], jnp.ones_like(carry["mask"][:, 0])),
            }
            dist = self.action_distribution(state, Window(**carry))
            action = dist.mode() if deterministic else dist.sample(key)
            action = action[:, -1]
            carry["actions"] = carry["actions"].at[:, -1].set(action)
            return carry, action

        return step

    def initial_context(self, batch: int) -> dict:
        k, data = self.config.dt.context, self.data
        return {
            "obs": jnp.zeros((batch, k, *data.obs.shape[2:]), jnp.float32),
            "actions": jnp.zeros((batch, k, *data.actions.shape[2:]), data.actions.dtype),
            "rtg": jnp.zeros((batch, k), jnp.float32),
            "timesteps": jnp.zeros((batch, k), jnp.int32),
            "mask": jnp.zeros((batch, k), jnp.float32),
        }

    def evaluate(self, state, key, num_episodes, deterministic, target_return=None):
        """Returns of ``num_episodes`` episodes, run ``num_envs`` at a time."""
        config = self.config
        target = config.dt.target_return if target_return is None else target_return
        if target is None:  # the best return in the training data
            target = float(np.asarray(self.data.rtg[:, 0]).max()) * config.dt.return_scale
        rounds = -(-num_episodes // config.num_envs)

        def one_round(key):
            return episode_returns(
                self.policy_step(state, target, deterministic),
                self.initial_context(config.num_envs),
                self.env,
                self.env_params,
                key,
                config.loop.eval_max_steps,
                policy_takes_reward=True,
            )["returns"]

        returns = jax.lax.map(one_round, jax.random.split(key, rounds)).reshape(-1)
        return {"returns": returns[:num_episodes]}


def make_trainer(config: Config, trajectories: Any | None = None) -> Trainer:
    """``trajectories``: padded data (default: ``seqrl.data.load_dataset(config.dataset)``)."""
    learner = Learner.from_config(config, trajectories)
    d = config.dt
    return Trainer(
        init=learner.init,
        update=learner.update,
        evaluate=learner.evaluate,
        num_updates=config.total_updates,
        steps_per_update=d.batch_size,
        unit="samples",
        data=learner.data,
        data_axis=distributed.DataAxis(d.batch_size, "dt.batch_size", distributed.replicated_specs),
        return_conditioned=True,
        internals=Internals(
            learner.model,
            learner.policy_step,
            learner.initial_context,
            learner.action_distribution,
        ),
    )


def make_train(config: Config, trajectories: Any | None = None):
    """``train(key) -> (learner_state, metrics)``: the whole run as one jittable function."""
    return train_fn(make_trainer(config, trajectories))
