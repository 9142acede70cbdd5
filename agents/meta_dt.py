"""Meta-DT (Wang et al., "Meta-DT: Offline Meta-RL as Conditional Sequence Modeling with World
Model Disentanglement", NeurIPS 2024), and the family of task-conditioned Decision
Transformers it is compared with, Prompt-DT among them (Xu et al., "Prompting Decision
Transformer for Few-Shot Policy Generalization", ICML 2022: ``meta.context: false``,
``meta.prompt: expert``, the preset configs/meta/*/prompt_dt.yaml).

One model, switched by ``meta``:

- ``context: true``: a task vector z_t from the world model's context encoder (the h transitions
  before t, see :mod:`seqrl.agents.world_model`) is concatenated into every state token:
  ``e_s = Linear([Linear(s) (16), z]) + time``. The world model is trained FIRST, inside
  ``init``, on the training tasks' data only, then frozen.
- ``prompt``: ``k`` steps (R^, s, a) with their own embeddings, prepended to the sequence.
  ``error``: the self-guided prompt, the length-k window of the task's data with the largest
  world-model prediction error (``error_sampled``: sampled in proportion to it; ``random``:
  uniform, the ablation); ``expert``: a segment of an expert demo of the task, from
  ``prompt_dataset`` (Prompt-DT: at test time the last k steps of a demo of the test task);
  ``none``. No prompt during the first ``prompt_warmup`` updates.
- Both off: a plain DT without task information (the floor).

Data: a multi-task dataset from ``seqrl collect`` on a per-task PPO run (``tasks: ...``): its
episodes carry their task (``episode_tasks``). Only TRAINING-split tasks are read for training
(and for the world model); test tasks are never seen before evaluation. The target return is
the best return of the training data (``dt.target_return`` overrides it), not a number read
from a test task's data.

Evaluation (``seqrl eval-meta`` runs :mod:`seqrl.agents.meta_acting`): zero-shot = only the
online context z; few-shot = a zero-shot episode first, then its highest-error segment as the
prompt (Meta-DT), or the last k steps of an expert demo of the test task (Prompt-DT).
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

from seqrl.agents import dt as dt_agent
from seqrl.agents.dt import (
    Block,
    DTConfig,
    Window,
    make_model,
    make_optimizer,
    sample_window,
    window_data,
)
from seqrl.agents.meta_acting import MetaAgent, task_features, z_size
from seqrl.agents.world_model import (
    Context,
    WorldModel,
    WorldModelConfig,
    context_at,
    train_world_model,
)
from seqrl.config import ConfigError, option
from seqrl.data import load_meta_dataset
from seqrl.envs.spaces import Discrete
from seqrl.errors import UserError
from seqrl.trainer import Trainer, train_fn

PROMPTS = ("none", "error", "error_sampled", "random", "expert")
# z is whitened with its training covariance plus this share of its total variance on the
# diagonal: directions that carry under ~1% of z's variance are damped instead of blown up
Z_FLOOR = 0.01


def inverse_sqrt(a: jax.Array, iterations: int = 30) -> jax.Array:
    """``a^(-1/2)`` of a symmetric positive definite matrix by the coupled Newton-Schulz
    iteration (Higham, "Functions of Matrices", 2008, eq. 6.35): matrix products only, no
    LAPACK call inside the vmapped init program. Converges for eigenvalues of ``a / ||a||_F``
    in (0, 1]; 30 iterations take a condition number of 1e4 to 3e-5 relative error (float32)."""
    norm = jnp.linalg.norm(a)
    eye = jnp.eye(a.shape[0], dtype=a.dtype)

    def step(_, yz):
        y, z = yz
        t = 0.5 * (3.0 * eye - z @ y)
        return y @ t, t @ z

    _, z = jax.lax.fori_loop(0, iterations, step, (a / norm, eye))
    return z / jnp.sqrt(norm)


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    context: bool = option(True, "condition state tokens on the world model's task vector z")
    oracle_task: bool = option(
        False,
        "a control, not an agent: the TRUE task parameters take z's place (the upper bound of "
        "any task inference on this data; needs a JAX task family, excludes context)",
    )
    prompt: Literal[PROMPTS] = option(
        "error",
        "prompt: error (self-guided: max world-model error), error_sampled, random, expert "
        "(Prompt-DT: from prompt_dataset), none",
    )
    prompt_length: int = option(5, "prompt segment length k (steps)", ge=1)
    prompt_warmup: int = option(0, "updates trained without a prompt first", ge=0)
    prompt_dropout: float = option(
        0.0,
        "share of training windows (after the warmup) that get no prompt, so that the DT also "
        "acts well without one, as zero-shot evaluation asks of it",
        ge=0,
        le=1,
    )
    opening: tuple[tuple[float, ...], ...] = option(
        (),
        "scripted first actions at evaluation, before the DT acts (continuous actions): the "
        "dataset's opening (seqrl collect --opening), a task-independent probe whose outcome "
        "carries the task, repeated exactly; must equal the dataset's (empty: the DT acts from "
        "the first step)",
    )


@dataclasses.dataclass(frozen=True)
class Config(dt_agent.Config):
    """Meta-DT training run (also Prompt-DT, the ablations and the plain-DT floor)."""

    agent: Literal["meta_dt"] = option("meta_dt", "the algorithm")
    env: str = option("meta/PointRobot", "task family (meta/...) the agent is evaluated in")
    dataset: str = option("", "multi-task dataset (seqrl collect on a per-task PPO run)")
    num_envs: int = option(4, "evaluation episodes per test task and round", ge=1)
    prompt_dataset: str = option("", "expert demos per task (prompt: expert)")
    dt: DTConfig = option(
        DTConfig(target_return=None),
        "Decision Transformer hyperparameters (target_return null: the best return of the "
        "training data)",
    )
    meta: MetaConfig = option(MetaConfig(), "task conditioning: context and prompt")
    world_model: WorldModelConfig = option(WorldModelConfig(), "context world model")

    def validate(self) -> None:
        super().validate()
        if not self.env.startswith("meta/"):
            raise ConfigError(f"config key 'env': {self.env!r} is not a task family (meta/...)")
        if self.meta.prompt == "expert" and not self.prompt_dataset:
            raise ConfigError("config key 'prompt_dataset' is required with meta.prompt=expert")
        if self.meta.oracle_task and self.meta.context:
            raise ConfigError(
                "config key 'meta.oracle_task': the true task replaces the context's z; set "
                "meta.context=false with it"
            )

    @property
    def uses_z(self) -> bool:
        """State tokens carry a task vector: the world model's z or the true task's."""
        return self.meta.context or self.meta.oracle_task

    @property
    def uses_world_model(self) -> bool:
        return self.meta.context or self.meta.prompt in ("error", "error_sampled")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class MetaDecisionTransformer(nn.Module):
    """``(window, z[B, K, Z] | None, prompt Window[B, k] | None) -> action distribution [B, K]``.

    Tokens: [prompt (R^, s, a) x k] + [(R^, s, a) x K], causal attention, padding masked; the
    head reads the K state tokens of the main sequence."""

    head: nn.Module
    num_actions: int | None
    embed_dim: int = 128
    num_layers: int = 3
    num_heads: int = 1
    dropout: float = 0.1
    max_timestep: int = 1000
    state_embed: int = 16  # Linear(s) width before concatenating z

    def _tokens(self, w: Window, z, prefix: str):
        b, k = w.rtg.shape
        d = self.embed_dim
        time = nn.Embed(self.max_timestep, d, name=f"{prefix}embed_timestep")(
            jnp.clip(w.timesteps, 0, self.max_timestep - 1)
        )
        r = nn.Dense(d, name=f"{prefix}embed_return")(w.rtg[..., None]) + time
        obs = w.obs.reshape(b, k, -1)
        if z is None:
            s = nn.Dense(d, name=f"{prefix}embed_state")(obs)
        else:
            s = nn.Dense(self.state_embed, name=f"{prefix}embed_state")(obs)
            s = nn.Dense(d, name=f"{prefix}embed_state_task")(jnp.concatenate([s, z], -1))
        s = s + time
        if self.num_actions is not None:
            a = nn.Embed(self.num_actions, d, name=f"{prefix}embed_action")(
                w.actions.astype(jnp.int32)
            )
        else:
            a = nn.Dense(d, name=f"{prefix}embed_action")(w.actions.reshape(b, k, -1))
        tokens = jnp.stack([r, s, a + time], axis=2).reshape(b, 3 * k, d)
        return tokens, jnp.repeat(w.mask, 3, axis=1)

    @nn.compact
    def __call__(self, w: Window, z=None, prompt: Window | None = None, train: bool = False):
        tokens, mask = self._tokens(w, z, "")
        k = 0
        if prompt is not None:
            k = prompt.rtg.shape[1]
            p_tokens, p_mask = self._tokens(prompt, None, "prompt_")
            tokens = jnp.concatenate([p_tokens, tokens], axis=1)
            mask = jnp.concatenate([p_mask, mask], axis=1)
        n = tokens.shape[1]
        x = nn.LayerNorm(name="embed_norm")(tokens)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        causal = jnp.tril(jnp.ones((n, n), bool))
        attn_mask = causal[None, None] & (mask > 0)[:, None, None, :]
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            x = Block(self.embed_dim, self.num_heads, self.dropout, name=f"block_{i}")(
                x, attn_mask, train, state_tokens_only=last
            )
        return self.head(nn.LayerNorm(name="final_norm")(x[:, k:]))  # the K main state tokens


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class MetaData:
    """Device arrays every update reads (an argument of the compiled update)."""

    windows: Any  # dt.WindowData of the training episodes (normalized states, scaled R^)
    actions_wm: jax.Array  # [N, L, A] actions as the world model reads them (discrete: one-hot)
    rewards: jax.Array  # [N, L] raw rewards
    next_obs: jax.Array  # [N, L, S] normalized next states
    tasks: jax.Array  # [N] global task index of each episode
    segments: jax.Array  # [W, 2] (episode, start) of every length-k segment, sorted by task
    segment_range: jax.Array  # [num_tasks, 2] each task's [lo, hi) rows of ``segments``
    prompts: Any  # dt.WindowData the prompts come from (the training data or expert demos)
    prompt_segments: jax.Array  # [P, 2] like ``segments``, over ``prompts``
    prompt_range: jax.Array  # [num_tasks, 2]
    task_features: jax.Array  # [num_tasks, D] the true task parameters (meta.oracle_task only)


def _segments(lengths: np.ndarray, tasks: np.ndarray, k: int, num_tasks: int):
    """Every (episode, start) with a full length-k segment, sorted by task, and each task's
    row range."""
    rows = [(e, s) for e in np.argsort(tasks, kind="stable") for s in range(lengths[e] - k + 1)]
    if not rows:
        raise UserError(f"no episode is at least prompt_length = {k} steps long")
    seg = np.asarray(rows, np.int32)
    seg_tasks = tasks[seg[:, 0]]
    lo = np.searchsorted(seg_tasks, np.arange(num_tasks), side="left")
    hi = np.searchsorted(seg_tasks, np.arange(num_tasks), side="right")
    return seg, np.stack([lo, hi], 1).astype(np.int32)


def _one_hot_actions(actions, action_space):
    if isinstance(action_space, Discrete):
        return jax.nn.one_hot(actions, action_space.n)
    return jnp.asarray(actions, jnp.float32).reshape(*actions.shape[:2], -1)


def best_per_task(weights: jax.Array, segment_range: jax.Array) -> jax.Array:
    """For each task, the row in its ``[lo, hi)`` range of ``segment_range`` with the largest
    weight (world-model error): the self-guided prompt of training."""
    rows = jnp.arange(weights.shape[0])
    in_task = (rows[None] >= segment_range[:, :1]) & (rows[None] < segment_range[:, 1:])
    return jnp.argmax(jnp.where(in_task, weights[None], -jnp.inf), axis=1).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class LearnerState(dt_agent.LearnerState):
    """The DT's learner state (the same leaves first) and the frozen world model's parts."""

    wm_params: Any  # the frozen world model (None when unused)
    wm_loss: jax.Array  # its final training loss
    z_table: jax.Array  # [N, L, Z] task vector of every training step (frozen encoder)
    segment_weights: jax.Array  # [W] world-model error of each segment (prompt choice)
    best_segment: jax.Array  # [num_tasks] row of ``segments`` with the largest error
    target_return: jax.Array  # scaled


@dataclasses.dataclass(frozen=True)
class Internals:
    """Meta-DT's own pieces (``trainer.internals``), for tests and notebooks: the model, the
    world model and ``sample(key, data, batch, state) -> (windows, z, prompt)``, the training
    batch."""

    model: Any
    world_model: Any
    sample: Any


def _next_states(trajectories: Any, windows: Any, obs_mean, obs_std) -> np.ndarray:
    """The normalized state each step led to (the final observation after the last step)."""
    lengths = np.asarray(trajectories.lengths)
    obs_n = np.asarray(windows.obs)
    next_obs = np.concatenate([obs_n[:, 1:], np.zeros_like(obs_n[:, :1])], axis=1)
    final_n = (np.asarray(trajectories.final_obs) - obs_mean) / obs_std
    next_obs[np.arange(len(lengths)), lengths - 1] = final_n
    return next_obs


def meta_data(config: Config, family, trajectories: Any, tasks: np.ndarray):
    """``(MetaData, obs_mean, obs_std)`` of the training tasks' padded ``trajectories`` (and,
    for expert prompts, of the prompt dataset's training-task demos)."""
    m, num_tasks = config.meta, family.num_train + family.num_test
    action_space = family.action_space(family.default_params)
    windows, obs_mean, obs_std = window_data(trajectories, config)
    lengths = np.asarray(trajectories.lengths)
    segments, segment_range = _segments(lengths, tasks, m.prompt_length, num_tasks)
    prompts, prompt_segments, prompt_range = windows, segments, segment_range
    if m.prompt == "expert":
        p_traj, p_tasks, _ = load_meta_dataset(config.prompt_dataset, family, "train")
        p_traj = p_traj.replace(obs=(np.asarray(p_traj.obs) - obs_mean) / obs_std)
        prompts = window_data(p_traj, dataclasses.replace(config, dt=_raw_states(config.dt)))[0]
        prompt_segments, prompt_range = _segments(
            np.asarray(p_traj.lengths), p_tasks, m.prompt_length, num_tasks
        )
    data = MetaData(
        windows=windows,
        actions_wm=_one_hot_actions(trajectories.actions, action_space),
        rewards=jnp.asarray(trajectories.rewards, jnp.float32),
        next_obs=jnp.asarray(_next_states(trajectories, windows, obs_mean, obs_std)),
        tasks=jnp.asarray(tasks, jnp.int32),
        segments=jnp.asarray(segments),
        segment_range=jnp.asarray(segment_range),
        prompts=prompts,
        prompt_segments=jnp.asarray(prompt_segments),
        prompt_range=jnp.asarray(prompt_range),
        task_features=task_features(family.split("all")) if m.oracle_task else jnp.zeros((1, 1)),
    )
    return data, obs_mean, obs_std


def pick_segment(key, task, rng: jax.Array, weights: jax.Array | None):
    """A row in ``[rng[task, 0], rng[task, 1])``, uniform or in proportion to ``weights``."""
    lo, hi = rng[task, 0], rng[task, 1]
    if weights is None:
        u = jax.random.uniform(key)
        return jnp.minimum(lo + jnp.floor(u * (hi - lo)).astype(jnp.int32), hi - 1)
    cum = jnp.cumsum(weights)
    base = jnp.where(lo > 0, cum[jnp.maximum(lo - 1, 0)], 0.0)
    u = base + jax.random.uniform(key) * (cum[hi - 1] - base)
    return jnp.clip(jnp.searchsorted(cum, u, side="right"), lo, hi - 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Learner:
    """Meta-DT's learning, pure functions of (learner state, data) for one seed."""

    config: Config
    model: MetaDecisionTransformer
    world_model: WorldModel
    tx: Any
    schedule: Any

    def contexts(self, data: MetaData, ep: jax.Array, t: jax.Array) -> Context:
        """Context of step ``t`` of episode ``ep`` (any matching shapes)."""
        h, freeze = self.config.world_model.horizon, self.config.world_model.freeze_at
        obs, act, rew, nxt = data.windows.obs, data.actions_wm, data.rewards, data.next_obs
        return jax.vmap(lambda e, tt: context_at(obs[e], act[e], rew[e], nxt[e], tt, h, freeze))(
            ep.reshape(-1), t.reshape(-1)
        )

    def encode(self, wm_params, ctx: Context, shape) -> jax.Array:
        """The task vector z the DT reads: the encoder's, whitened with the training table's
        statistics (``wm_params["z_norm"]``, once they exist)."""
        z = self.world_model.apply({"params": wm_params["params"]}, ctx, method=WorldModel.encode)
        if "z_norm" in wm_params:
            z = (z - wm_params["z_norm"]["shift"]) @ wm_params["z_norm"]["whiten"]
        return jax.lax.stop_gradient(z).reshape(*shape, -1)

    def segment_errors(self, wm_params, data: MetaData) -> jax.Array:
        """World-model error summed over each segment of ``data.segments``: [W]."""
        n, length = data.rewards.shape
        ep = jnp.repeat(jnp.arange(n), length)
        t = jnp.tile(jnp.arange(length), n)
        ctx = self.contexts(data, ep, t)
        err = self.world_model.apply(
            wm_params,
            ctx,
            data.windows.obs[ep, t],
            data.actions_wm[ep, t],
            data.rewards[ep, t],
            data.next_obs[ep, t],
            method=WorldModel.errors,
        ).reshape(n, length)
        per_step = jnp.where(jnp.arange(length)[None] < data.windows.lengths[:, None], err, 0.0)
        starts = data.segments[:, 1][:, None] + jnp.arange(self.config.meta.prompt_length)[None]
        return per_step[data.segments[:, 0][:, None], starts].sum(1)

    def world_model_parts(self, key, data: MetaData):
        """``(wm_params, wm_loss, segment weights, z_table)``: the world model trained on the
        data (when the config uses one), its segment errors and every step's task vector,
        whitened: centered and multiplied by ``(C + Z_FLOOR tr(C) I)^(-1/2)`` of z's covariance
        C over the training steps (the mean and that matrix join ``wm_params``). On PointRobot
        the raw z has per-dimension means up to 2 and stds of 0.05-0.5 (zero-shot 0.32, then
        0.51 standardized per dimension), and 91-96% of its standardized variance lies on one
        direction, so the goal's second coordinate reached the DT at a quarter of the first's
        scale (0.57 zero-shot; whitened 0.64 and 0.77 in two runs; docs/results.md)."""
        wmc = self.config.world_model
        if not self.config.uses_world_model:
            weights = jnp.ones(data.segments.shape[0])
            return None, jnp.zeros(()), weights, jnp.zeros((1, 1, wmc.latent_dim))
        wm_params, losses = train_world_model(
            self.world_model,
            key,
            data.windows.obs,
            data.actions_wm,
            data.rewards,
            data.next_obs,
            data.windows.lengths,
            jnp.arange(data.rewards.shape[0]),
            wmc,
            data.tasks,
        )
        n, length = data.rewards.shape
        ep, t = jnp.repeat(jnp.arange(n), length), jnp.tile(jnp.arange(length), n)
        z_table = self.encode(wm_params, self.contexts(data, ep, t), (n, length))
        valid = (jnp.arange(length)[None] < data.windows.lengths[:, None])[..., None]
        count = valid.sum()
        shift = (z_table * valid).sum((0, 1)) / count
        centered = (z_table - shift) * valid
        cov = jnp.einsum("nli,nlj->ij", centered, centered) / count
        whiten = inverse_sqrt(cov + (Z_FLOOR * jnp.trace(cov) + 1e-8) * jnp.eye(cov.shape[0]))
        errors = self.segment_errors(wm_params, data)
        wm_params = {**wm_params, "z_norm": {"shift": shift, "whiten": whiten}}
        return wm_params, losses[-100:].mean(), errors, (z_table - shift) @ whiten

    def init(self, key: jax.Array, data: MetaData, obs_mean, obs_std, target) -> LearnerState:
        """The world model first (trained, then frozen), then the DT's parameters."""
        c = self.config
        key, wm_key, init_key = jax.random.split(key, 3)
        wm_params, wm_loss, weights, z_table = self.world_model_parts(wm_key, data)
        if c.meta.oracle_task:  # every step's "z" is its episode's true task
            n, length = data.rewards.shape
            features = data.task_features[data.tasks][:, None]
            z_table = jnp.broadcast_to(features, (n, length, features.shape[-1]))
        batch, z, prompt = self.sample(init_key, data, 1, None)
        params = self.model.init(init_key, batch, z, prompt)
        return LearnerState(
            params=params,
            opt_state=self.tx.init(params),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            obs_mean=jnp.asarray(obs_mean),
            obs_std=jnp.asarray(obs_std),
            wm_params=wm_params,
            wm_loss=wm_loss,
            z_table=z_table if c.uses_z else jnp.zeros((1, 1, c.world_model.latent_dim)),
            segment_weights=weights,
            best_segment=best_per_task(weights, data.segment_range),
            target_return=jnp.asarray(target / c.dt.return_scale, jnp.float32),
        )

    def _prompts(self, key, data: MetaData, ep, state: LearnerState | None) -> Window:
        """A prompt of each window's task: its best, an error-weighted or a uniform segment."""
        m, batch = self.config.meta, ep.shape[0]
        task = data.tasks[ep]
        weights = None
        if state is not None and m.prompt == "error_sampled":
            weights = state.segment_weights
        rows = jax.vmap(lambda kk, tt: pick_segment(kk, tt, data.prompt_range, weights))(
            jax.random.split(key, batch), task
        )
        if state is not None and m.prompt == "error":
            rows = state.best_segment[task]
        seg = data.prompt_segments[rows]
        prompt = jax.vmap(sample_window, in_axes=(None, 0, 0, None))(
            data.prompts, seg[:, 0], seg[:, 1], m.prompt_length
        )
        if state is not None:
            kept = jax.random.uniform(jax.random.fold_in(key, 1), (batch,)) >= m.prompt_dropout
            on = (state.update_step >= m.prompt_warmup) & kept
            prompt = prompt.replace(mask=prompt.mask * on[:, None].astype(jnp.float32))
        return prompt

    def sample(self, key, data: MetaData, batch: int, state: LearnerState | None):
        """``batch`` training windows with their task vectors and prompts (``state`` None: for
        shapes at init, before the world model exists)."""
        c, k = self.config, self.config.dt.context
        k_ep, k_start, k_prompt = jax.random.split(key, 3)
        w = data.windows
        ep = jax.random.choice(k_ep, w.lengths.shape[0], (batch,), p=w.weights)
        start = jnp.floor(jax.random.uniform(k_start, (batch,)) * w.lengths[ep]).astype(jnp.int32)
        win = jax.vmap(sample_window, in_axes=(None, 0, 0, None))(w, ep, start, k)
        z = None
        if c.uses_z:
            if state is None:
                z = jnp.zeros((batch, k, z_size(c, data.task_features)))
            else:
                z = state.z_table[ep[:, None], win.timesteps] * win.mask[..., None]
        prompt = None
        if c.meta.prompt != "none":
            prompt = self._prompts(k_prompt, data, ep, state)
        return win, z, prompt

    def loss_fn(self, params, win: Window, z, prompt, key):
        dist = self.model.apply(params, win, z, prompt, train=True, rngs={"dropout": key})
        log_prob = dist.log_prob(win.actions)
        nll = -jnp.sum(log_prob * win.mask) / jnp.maximum(win.mask.sum(), 1.0)
        return nll + dist.aux_loss(), {"action_loss": nll}

    def update(self, state: LearnerState, data: MetaData) -> tuple[LearnerState, dict]:
        key, batch_key, drop_key = jax.random.split(state.key, 3)
        win, z, prompt = self.sample(batch_key, data, self.config.dt.batch_size, state)
        (loss, stats), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
            state.params, win, z, prompt, drop_key
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        state = state.replace(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            key=key,
            update_step=state.update_step + 1,
        )
        return state, {"loss": loss, **stats, "lr": self.schedule(state.update_step)}


def _learner(config: Config, family) -> Learner:
    """The model (the same head and sizes as a plain DT), the world model, the optimizer."""
    params0 = family.default_params
    dt_model = make_model(config, family.action_space(params0))
    shared = ("head", "num_actions", "embed_dim", "num_layers", "num_heads", "dropout")
    model = MetaDecisionTransformer(
        **{f: getattr(dt_model, f) for f in shared}, max_timestep=dt_model.max_timestep
    )
    obs_size = int(np.prod(family.observation_space(params0).shape))
    world_model = WorldModel(config.world_model, obs_size)
    return Learner(config, model, world_model, *make_optimizer(config.dt))


def _check_opening(config: Config, family, recorded: list | None) -> None:
    """A ``meta.opening`` fits the action space and is the dataset's own opening (``recorded``;
    None: trajectories given directly, nothing recorded to compare). None given: the DT acts
    from the first step (and imitates any opening the data has)."""
    from seqrl.collection import check_opening

    opening = config.meta.opening
    if opening:
        try:
            check_opening(opening, family.action_space(family.default_params))
        except UserError as e:
            raise ConfigError(f"config key 'meta.opening': {e}") from None
    mine = [list(a) for a in opening]
    if opening and recorded is not None and mine != [list(a) for a in recorded]:
        raise ConfigError(
            f"config key 'meta.opening': {mine} is not the opening of "
            f"dataset {config.dataset} ({recorded}): the agent must repeat the data's probe"
        )


def _training_data(config: Config, family, trajectories: Any | None):
    """The training tasks' episodes and their tasks (read from ``config.dataset`` unless
    given), checked against the family's observations and ``meta.opening``."""
    if trajectories is None:
        trajectories, tasks, meta = load_meta_dataset(config.dataset, family, "train")
        _check_opening(config, family, meta.info.get("opening", []))
    else:
        trajectories, tasks = trajectories
        _check_opening(config, family, None)
    obs_shape = tuple(family.observation_space(family.default_params).shape)
    if tuple(trajectories.obs.shape[2:]) != obs_shape:
        raise ConfigError(
            f"dataset {config.dataset}: observations of shape {trajectories.obs.shape[2:]} do "
            f"not fit {config.env} ({obs_shape})"
        )
    return trajectories, tasks


def make_trainer(config: Config, trajectories: Any | None = None) -> Trainer:
    """``trajectories``: ``(padded episodes, their tasks)`` (default: the training tasks'
    episodes of ``config.dataset``)."""
    from seqrl.envs import make_raw

    m = config.meta
    family = make_raw(config.env, **config.env_kwargs)
    if m.oracle_task and getattr(family, "host", False):
        raise ConfigError(
            f"config key 'meta.oracle_task' needs a JAX task family, not {config.env} (host-side)"
        )
    trajectories, tasks = _training_data(config, family, trajectories)
    data, obs_mean, obs_std = meta_data(config, family, trajectories, tasks)
    returns = np.asarray(trajectories.rewards).sum(1)
    target = config.dt.target_return
    target = float(returns.max()) if target is None else target
    learner = _learner(config, family)
    agent = MetaAgent(config, family, learner.model, learner.world_model, data, learner.encode)
    if m.prompt == "expert":  # read the held-out tasks' demos now, on the host
        agent.prompt_demos("test")

    def evaluate(state, key, num_episodes, deterministic):
        """The run's own protocol on the test tasks: zero-shot for Meta-DT and the DT floor,
        the expert prompt for Prompt-DT."""
        mode = "few-shot" if m.prompt == "expert" else "zero-shot"
        rounds = max(1, -(-num_episodes // (family.num_test * config.num_envs)))
        out = agent.evaluate(state, key, "test", mode, agent.protocols[0], rounds, deterministic)
        # episode-major, so any prefix covers every test task
        return {"returns": out["returns"].T.reshape(-1)[:num_episodes]}

    return Trainer(
        init=lambda key: learner.init(key, data, obs_mean, obs_std, target),
        update=learner.update,
        evaluate=evaluate,
        num_updates=config.total_updates,
        steps_per_update=config.dt.batch_size,
        unit="samples",
        data=data,
        meta=agent,
        internals=Internals(learner.model, learner.world_model, learner.sample),
        host_evaluate=getattr(family, "host", False),
    )


def _raw_states(d: DTConfig) -> DTConfig:
    """Prompt demos are normalized with the TRAINING data's statistics, not their own."""
    return dataclasses.replace(d, normalize_states=False)


def make_train(config: Config, trajectories: Any | None = None):
    return train_fn(make_trainer(config, trajectories))


def task_vectors(trainer: Trainer, state: LearnerState, trajectories: Any) -> jax.Array:
    """The task vector z_t of every step of ``trajectories`` (padded ``seqrl.data.Trajectories``
    of any tasks, held-out ones included) from the run's frozen context encoder, with the same
    contexts and state normalization as training: ``[N, L, latent_dim]``; steps ``t >= lengths``
    are padding. ``state`` is one seed's (``seqrl.load(run_dir).seed_state(i)``)."""
    agent = trainer.meta
    if not agent.config.uses_world_model:
        raise UserError("this run has no world model (meta.context false, no error prompt)")
    normalize = lambda x: (jnp.asarray(x, jnp.float32) - state.obs_mean) / state.obs_std
    obs = normalize(trajectories.obs)
    n, length = obs.shape[:2]
    last = jnp.asarray(trajectories.lengths) - 1
    next_obs = jnp.concatenate([obs[:, 1:], jnp.zeros_like(obs[:, :1])], axis=1)
    next_obs = next_obs.at[jnp.arange(n), last].set(normalize(trajectories.final_obs))
    space = agent.family.action_space(agent.family.default_params)
    actions = _one_hot_actions(jnp.asarray(trajectories.actions), space)
    rewards = jnp.asarray(trajectories.rewards, jnp.float32)
    h, freeze = agent.config.world_model.horizon, agent.config.world_model.freeze_at
    steps = jnp.arange(length)
    ctx = jax.vmap(
        lambda o, a, r, s2: jax.vmap(lambda t: context_at(o, a, r, s2, t, h, freeze))(steps)
    )(obs, actions, rewards, next_obs)
    return agent.encode(state.wm_params, ctx, (n, length))
