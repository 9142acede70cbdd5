"""Proximal Policy Optimization (Schulman et al. 2017) on vectorized JAX environments.

One update, top to bottom: COLLECT ``num_steps`` transitions from ``num_envs`` envs, compute
ADVANTAGES with GAE (bootstrapping from the final observation on truncation), then UPDATE for
``update_epochs`` epochs over ``num_minibatches`` minibatches. Discrete and continuous actions.
The network follows the sequence-layer convention ``(carry, obs[T, B], resets[T, B])``: the loss
re-runs each rollout from the carry it started with, and minibatches split over environments
(a feed-forward network sees its rollout as T = 1 sequences of independent samples).

``make_train(config) -> train(key)`` runs everything in one jittable function; ``num_seeds`` is a
vmap axis over ``key``. Hyperparameters marked traced (lr, gamma, gae_lambda, clip_eps,
ent_coef, vf_coef) live in the learner state as jax values, so they can be vmapped too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from flax import struct

from seqrl import config as cfg
from seqrl import distributed, shuffle
from seqrl.config import ConfigError, LoopConfig, NetworkConfig, WrapperConfig, option
from seqrl.envs import make_vec
from seqrl.envs.core import NormalizeObservationState, find_state
from seqrl.errors import UserError
from seqrl.evaluate import episode_returns
from seqrl.heads import head_for
from seqrl.networks import make_actor_critic
from seqrl.returns import gae
from seqrl.trainer import Actor, PerTask, Trainer, train_fn

# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    num_steps: int = option(128, "rollout length per env and update", ge=1)
    update_epochs: int = option(4, "passes over each rollout", ge=1)
    num_minibatches: int = option(4, "minibatches per epoch (split over envs / samples)", ge=1)
    lr: float = option(2.5e-4, "Adam learning rate", gt=0, traced=True)
    anneal_lr: bool = option(True, "decay the learning rate linearly to 0")
    gamma: float = option(0.99, "discount", ge=0, le=1, traced=True)
    gae_lambda: float = option(0.95, "GAE lambda", ge=0, le=1, traced=True)
    clip_eps: float = option(
        0.2, "policy ratio clip range (also clips the value loss)", gt=0, traced=True
    )
    ent_coef: float = option(0.01, "entropy bonus coefficient", ge=0, traced=True)
    vf_coef: float = option(0.5, "value loss coefficient", ge=0, traced=True)
    max_grad_norm: float = option(0.5, "global gradient norm clip", gt=0)
    normalize_advantages: bool = option(True, "standardize advantages per minibatch")


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO training run."""

    agent: Literal["ppo"] = option("ppo", "the algorithm")
    env: str = option("gymnax/CartPole-v1", "environment name (see `seqrl envs`)")
    env_kwargs: dict = option({}, "keyword arguments for the environment's constructor")
    seed: int = option(0, "random seed (seed i of num_seeds uses fold_in(seed, i))", ge=0)
    num_seeds: int = option(1, "independent seeds trained in parallel (a vmap axis)", ge=1)
    num_envs: int = option(4, "parallel environments per seed", ge=1)
    devices: Literal["all"] | int = cfg.devices_option()
    total_timesteps: int = option(500_000, "env steps per seed (per task with `tasks`)", ge=1)
    tasks: Literal["none", "train", "test", "all"] = option(
        "none",
        "task families (meta/*): train one policy per task of this split, all in one run "
        "(a vmap axis inside each seed); none: one policy for the env as it is",
    )
    ppo: PPOConfig = option(PPOConfig(), "PPO hyperparameters")
    network: NetworkConfig = option(NetworkConfig(), "actor-critic network")
    wrappers: WrapperConfig = option(WrapperConfig(), "environment wrappers")
    loop: LoopConfig = option(LoopConfig(), "host loop, checkpoints, evaluation")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.ppo.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    def validate(self) -> None:
        from seqrl.envs.registry import check_name

        check_name(self.env, key="env")
        if self.tasks != "none" and not self.env.startswith("meta/"):
            raise ConfigError(
                f"config key 'tasks' ({self.tasks!r}) needs a task family (meta/...), "
                f"not {self.env!r}"
            )
        if self.num_updates < 1:
            raise ConfigError(
                f"config key 'total_timesteps' ({self.total_timesteps}) must be at least "
                f"num_envs * ppo.num_steps = {self.steps_per_update}"
            )
        recurrent = self.network.is_recurrent
        split = self.num_envs if recurrent else self.steps_per_update
        if split % self.ppo.num_minibatches:
            what = (
                "num_envs (recurrent: minibatches split over envs)"
                if recurrent
                else ("num_envs * ppo.num_steps")
            )
            raise ConfigError(
                f"config key 'ppo.num_minibatches' ({self.ppo.num_minibatches}) must divide "
                f"{what} = {split}"
            )


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class HyperParams:
    lr: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_eps: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array


@struct.dataclass
class LearnerState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [B, ...] next observation to act on
    first: jax.Array  # [B] obs is the first of an episode (resets recurrent state)
    final_obs: jax.Array  # [B, ...] the observation the last step led to (before any reset)
    carry: Any  # network carry before `obs`
    key: jax.Array
    update_step: jax.Array
    hparams: HyperParams


@struct.dataclass
class TaskLearnerState(LearnerState):
    """A per-task learner (``config.tasks``): its own task's env params travel with it."""

    env_params: Any = None


@struct.dataclass
class Transition:
    obs: jax.Array
    first: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    prev_next_value: jax.Array  # V(final obs of the previous step | carry before obs)
    episode_done: jax.Array
    episode_return: jax.Array


@struct.dataclass
class Batch:
    """What the loss needs of a rollout (time-major ``[T, B]``)."""

    obs: jax.Array
    first: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


# what the loss reports per minibatch, in the order of its statistics vector (plus "grad_norm")
LOSS_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


def clipped_loss(dist: Any, value: jax.Array, b: Batch, h: HyperParams):
    """PPO's loss for the policy ``dist`` and values ``value`` on the minibatch ``b``:
    ``(total, LOSS_STATS means)`` with

        ratio  = pi(a | s) / pi_old(a | s)
        policy = -mean min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)          (Schulman et al.)
        value  = 0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)
        total  = policy + vf_coef value - ent_coef entropy + the head's own regularizer

    The advantages A arrive normalized (per minibatch, in ``minibatches``). Every per-sample
    term goes through one stacked mean: one reduction instead of one per term, which matters on
    CPU where each reduction is a kernel launch of its own."""
    log_ratio = dist.log_prob(b.action) - b.log_prob
    ratio = jnp.exp(log_ratio)
    adv, targets = b.advantage, b.target
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - h.clip_eps, 1 + h.clip_eps) * adv)
    value_clipped = b.value + jnp.clip(value - b.value, -h.clip_eps, h.clip_eps)
    vf = 0.5 * jnp.maximum((value - targets) ** 2, (value_clipped - targets) ** 2)
    diagnostics = jax.lax.stop_gradient(
        jnp.stack([(ratio - 1) - log_ratio, (jnp.abs(ratio - 1) > h.clip_eps)])
    )
    terms = jnp.concatenate([jnp.stack([pg, vf, dist.entropy()]), diagnostics.astype(pg.dtype)])
    means = terms.reshape(len(LOSS_STATS), -1).mean(axis=1)
    policy_loss, value_loss, entropy = means[0], means[1], means[2]
    total = policy_loss + h.vf_coef * value_loss - h.ent_coef * entropy + dist.aux_loss()
    return total, means


def hyperparams_from(config: Config) -> HyperParams:
    return HyperParams(
        **{k: jnp.asarray(v, jnp.float32) for k, v in cfg.traced_fields(config.ppo).items()}
    )


def make_network(config: Config, action_space):
    net = config.network
    try:
        head = head_for(
            action_space,
            net.head,
            fourier_frequencies=net.fourier_frequencies,
            fourier_bins=net.fourier_bins,
            action_order=net.action_order,
        )
    except ValueError as e:
        raise ConfigError(f"config key 'network.head': {e}") from None
    return make_actor_critic(net, head)


def make_env(config: Config, num_envs: int, *, obs_stats=None, evaluation: bool = False):
    """The vectorized training env; for evaluation, without reward scaling and with the
    observation statistics ``obs_stats`` frozen."""
    w = config.wrappers
    return make_vec(
        config.env,
        num_envs,
        env_kwargs=config.env_kwargs,
        clip_action=w.clip_action,
        normalize_obs=w.normalize_obs,
        normalize_reward=w.normalize_reward and not evaluation,
        gamma=config.ppo.gamma,
        obs_stats=obs_stats,
    )


# ---------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Internals:
    """PPO's own pieces (``trainer.internals``), for tests and notebooks: the actor-critic,
    ``collect(state) -> (state, Transition[T, B])``, ``advantages(state, traj) -> (adv,
    targets)`` and ``minibatches(key, start_carry, batch) -> (carries, batches)``."""

    network: Any
    collect: Any
    advantages: Any
    minibatches: Any


# identity equality and hash (eq=False): the config holds a dict, and the Trainer's fields are
# this object's bound methods
@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """One PPO learner (one seed): the training env, the actor-critic and the optimizer, with
    the pure functions :func:`single_trainer` hands the loop as bound methods. They read the env
    params from the learner state when ``init`` was given some (``init(key,
    task_params=...)``), else the env's defaults (``env_params``)."""

    config: Config
    venv: Any
    env_params: Any
    network: Any
    tx: Any

    @classmethod
    def from_config(cls, config: Config) -> Learner:
        venv = make_env(config, config.num_envs)
        env_params = venv.default_params
        network = make_network(config, venv.action_space(env_params))
        # one flat parameter vector for the optimizer: Adam's and the norm clip's elementwise
        # work runs as one fused loop instead of one per parameter array (~3% of an update on CPU)
        p = config.ppo
        tx = optax.flatten(
            optax.chain(optax.clip_by_global_norm(p.max_grad_norm), optax.scale_by_adam(eps=1e-5))
        )
        return cls(config, venv, env_params, network, tx)

    def params_of(self, s: LearnerState):
        """The env params ``s`` acts in: its own task's, else the env's defaults."""
        return getattr(s, "env_params", self.env_params)

    def init(
        self, key: jax.Array, hparams: HyperParams | None = None, task_params: Any = None
    ) -> LearnerState:
        config, network = self.config, self.network
        key, net_key, env_key = jax.random.split(key, 3)
        obs, env_state = self.venv.reset(
            env_key, self.env_params if task_params is None else task_params
        )
        carry = network.initialize_carry(config.num_envs)
        first = jnp.ones(config.num_envs, jnp.bool_)
        params = network.init(net_key, carry, obs[None], first[None])
        state = LearnerState(
            params=params,
            opt_state=self.tx.init(params),
            env_state=env_state,
            obs=obs,
            first=first,
            final_obs=obs,
            carry=carry,
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            hparams=hyperparams_from(config) if hparams is None else hparams,
        )
        if task_params is None:
            return state
        return TaskLearnerState(**vars(state), env_params=task_params)

    # -- COLLECT ---------------------------------------------------------------------------------

    def act(self, s: LearnerState, key: jax.Array):
        """``(carry, action, log_prob, value, prev_next_value)``: the first four for
        ``s.obs``, the last the bootstrap value V(s.final_obs) of the previous step (for a
        recurrent network continued from the same carry without a reset): one call on a doubled
        batch instead of a second pass over the rollout. The action is drawn for both halves
        and the second half's dropped (cheaper than slicing every head's distribution)."""
        n = s.obs.shape[0]
        obs = jnp.concatenate([s.obs, s.final_obs])[None]
        resets = jnp.concatenate([s.first, jnp.zeros_like(s.first)])[None]
        both = jax.tree.map(lambda c: jnp.concatenate([c, c]), s.carry)
        carry, dist, value = self.network.apply(s.params, both, obs, resets)
        action = dist.sample(key)
        log_prob = dist.log_prob(action)
        carry = jax.tree.map(lambda c: c[:n], carry)
        return carry, action[0, :n], log_prob[0, :n], value[0, :n], value[0, n:]

    def env_step(self, s: LearnerState, _) -> tuple[LearnerState, Transition]:
        """One step of every env (the body of :meth:`collect`'s scan)."""
        key, act_key, step_key = jax.random.split(s.key, 3)
        carry, action, log_prob, value, prev_next_value = self.act(s, act_key)
        obs, env_state, reward, terminated, truncated, info = self.venv.step(
            step_key, s.env_state, action, self.params_of(s)
        )
        done = jnp.logical_or(terminated, truncated)
        transition = Transition(
            obs=s.obs,
            first=s.first,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=reward,
            terminated=terminated,
            done=done,
            final_obs=info["final_observation"],
            prev_next_value=prev_next_value,
            episode_done=info["episode_done"],
            episode_return=info["episode_return"],
        )
        s = s.replace(
            env_state=env_state,
            obs=obs,
            first=done,
            final_obs=info["final_observation"],
            carry=carry,
            key=key,
        )
        return s, transition

    def collect(self, state: LearnerState) -> tuple[LearnerState, Transition]:
        return jax.lax.scan(self.env_step, state, None, self.config.ppo.num_steps)

    # -- ADVANTAGES ------------------------------------------------------------------------------

    def advantages(self, state: LearnerState, traj: Transition):
        h = state.hparams
        # V of the observation each step led to (the next observation unless the episode ended,
        # then the one before the auto-reset): computed while acting, one step late, plus one
        # call for the last step.
        _, _, last = self.network.apply(
            state.params, state.carry, state.final_obs[None], jnp.zeros_like(state.first)[None]
        )
        next_values = jnp.concatenate([traj.prev_next_value[1:], last])
        return gae(
            traj.reward, traj.value, next_values, traj.terminated, traj.done, h.gamma, h.gae_lambda
        )

    # -- UPDATE ----------------------------------------------------------------------------------

    def loss(self, params, h: HyperParams, minibatch: tuple[Any, Batch]):
        """The minibatch's rollout re-run from the carry it started with, then PPO's loss."""
        carry, b = minibatch
        _, dist, value = self.network.apply(params, carry, b.obs, b.first)
        return clipped_loss(dist, value, b, h)

    def minibatches(self, key, start_carry, batch: Batch):
        """``num_minibatches`` (carry, Batch) pairs split over environments (axis 1 of [T, B]);
        a feed-forward network's rollout is one [1, T * B] batch of independent samples."""
        p = self.config.ppo
        if not self.network.is_recurrent:
            batch = jax.tree.map(lambda x: x.reshape(1, -1, *x.shape[2:]), batch)
        n = batch.obs.shape[1]
        perm = shuffle.permutation(key, n)
        m = p.num_minibatches

        def split(x, axis):
            x = jnp.take(x, perm, axis=axis)
            x = x.reshape(*x.shape[:axis], m, n // m, *x.shape[axis + 1 :])
            return jnp.moveaxis(x, axis, 0)

        carries = jax.tree.map(lambda x: split(x, 0), start_carry)
        batches = jax.tree.map(lambda x: split(x, 1), batch)
        if p.normalize_advantages:
            # per minibatch, as in the loss of PureJaxRL/CleanRL, but for all minibatches of
            # the epoch at once: the advantages do not depend on the parameters
            adv = batches.advantage
            axes = tuple(range(1, adv.ndim))
            mean = adv.mean(axis=axes, keepdims=True)
            std = adv.std(axis=axes, keepdims=True)
            batches = batches.replace(advantage=(adv - mean) / (std + 1e-8))
        return carries, batches

    def epochs(self, state: LearnerState, key, start_carry, batch: Batch, lr):
        """``update_epochs`` passes of minibatch SGD over ``batch`` from ``state``'s parameters:
        ``((params, opt_state), stats[epochs, minibatches, LOSS_STATS + grad_norm])``."""
        h = state.hparams

        def sgd_step(carry, minibatch):
            params, opt_state = carry
            grads, stats = jax.grad(self.loss, has_aux=True)(params, h, minibatch)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            updates = jax.tree.map(lambda u: -lr * u, updates)
            # the norm of the flat gradient: the same computation as the norm clip's inside
            # optax.flatten, so XLA computes it once
            grad_norm = optax.tree.norm(jax.flatten_util.ravel_pytree(grads)[0])
            stats = jnp.concatenate([stats, grad_norm[None]])
            return (optax.apply_updates(params, updates), opt_state), stats

        def epoch(carry, key):
            batches = self.minibatches(key, start_carry, batch)
            return jax.lax.scan(sgd_step, carry, batches)

        epoch_keys = jax.random.split(key, self.config.ppo.update_epochs)
        return jax.lax.scan(epoch, (state.params, state.opt_state), epoch_keys)

    def update(self, state: LearnerState) -> tuple[LearnerState, dict]:
        p = self.config.ppo
        start_carry = state.carry
        # COLLECT
        state, traj = self.collect(state)
        # ADVANTAGES
        adv, targets = self.advantages(state, traj)
        batch = Batch(traj.obs, traj.first, traj.action, traj.log_prob, traj.value, adv, targets)
        # UPDATE
        frac = 1.0 - state.update_step / self.config.num_updates if p.anneal_lr else 1.0
        lr = state.hparams.lr * frac
        key, epoch_key = jax.random.split(state.key)
        (params, opt_state), stats = self.epochs(state, epoch_key, start_carry, batch, lr)
        state = state.replace(
            params=params, opt_state=opt_state, key=key, update_step=state.update_step + 1
        )
        return state, update_metrics(traj, stats, lr)

    # -- acting with the trained policy ----------------------------------------------------------

    def rollout_env(self, state: LearnerState, num_envs: int):
        """``(venv, params)`` to roll the trained policy out in: no reward scaling, observation
        statistics frozen at the trained ones, held-out tasks where the env has a split (a
        per-task learner acts in its own task)."""
        obs_stats = find_state(state.env_state, NormalizeObservationState)
        obs_stats = None if obs_stats is None else obs_stats.stats
        venv = make_env(self.config, num_envs, obs_stats=obs_stats, evaluation=True)
        if isinstance(state, TaskLearnerState):
            return venv, state.env_params
        env_params = self.env_params
        params = venv.eval_params(env_params) if hasattr(venv, "eval_params") else env_params
        return venv, params

    def policy_step(self, state: LearnerState, deterministic: bool):
        """``(carry, obs[B], first[B], key) -> (carry, action[B])`` for the trained policy."""
        network = self.network

        def step(carry, obs, first, key):
            carry, dist, _ = network.apply(state.params, carry, obs[None], first[None])
            action = dist.mode() if deterministic else dist.sample(key)
            return carry, action[0]

        return step

    def evaluate(self, state: LearnerState, key: jax.Array, num_episodes: int, deterministic: bool):
        venv, params = self.rollout_env(state, num_episodes)
        return episode_returns(
            self.policy_step(state, deterministic),
            self.network.initialize_carry(num_episodes),
            venv,
            params,
            key,
            self.config.loop.eval_max_steps,
            getattr(self.env_params, "episodes_per_trial", None),
        )

    def state_specs(self, state: LearnerState):
        """How one seed's learner state is sharded when the env batch is: env states,
        observations and the recurrent carry along the envs; parameters, optimizer state and
        shared statistics (observation normalizer) replicated."""
        config, key = self.config, jax.random.PRNGKey(0)
        envs = distributed.leading_axis_specs(
            lambda n: make_env(config, n).reset(key, self.env_params)[1], config.num_envs
        )
        carry = distributed.leading_axis_specs(self.network.initialize_carry, config.num_envs)
        batched = distributed.PartitionSpec(distributed.AXIS)
        return distributed.replicated_specs(state).replace(
            env_state=envs, obs=batched, first=batched, final_obs=batched, carry=carry
        )


def update_metrics(traj: Transition, stats: jax.Array, lr) -> dict:
    """An update's metrics: the means of the minibatches' ``stats`` (``LOSS_STATS`` and
    ``grad_norm``), the learning rate and the episodes that ended in the rollout ``traj``."""
    episodes = traj.episode_done.sum()
    metrics = dict(zip((*LOSS_STATS, "grad_norm"), stats.reshape(-1, stats.shape[-1]).mean(0)))
    metrics["lr"] = lr
    metrics["episodes"] = episodes
    metrics["episode_return"] = jnp.where(
        episodes > 0,
        (traj.episode_return * traj.episode_done).sum() / jnp.maximum(episodes, 1),
        jnp.nan,
    )
    return metrics


def make_trainer(config: Config) -> Trainer:
    """Pure functions for the training loop: ``init(key)``, ``update(state)``, ``evaluate``.
    With ``config.tasks`` set, one learner per task of that split, vmapped (see
    :func:`per_task_trainer`)."""
    single = single_trainer(config)
    return single if config.tasks == "none" else per_task_trainer(config, single)


def single_trainer(config: Config) -> Trainer:
    """One learner (one seed), its functions those of a :class:`Learner`."""
    learner = Learner.from_config(config)
    actor = Actor(
        env=learner.rollout_env,
        policy=learner.policy_step,
        initial_carry=learner.network.initialize_carry,
    )
    return Trainer(
        init=learner.init,
        update=learner.update,
        evaluate=learner.evaluate,
        num_updates=config.num_updates,
        steps_per_update=config.steps_per_update,
        data_axis=distributed.DataAxis(config.num_envs, "num_envs", learner.state_specs),
        actor=actor,
        meta=InContext(config, actor) if config.env.startswith("meta/") else None,
        internals=Internals(
            learner.network, learner.collect, learner.advantages, learner.minibatches
        ),
    )


def task_params(config: Config, split: str | None = None):
    """The env params of each task of ``split`` (default ``config.tasks``), stacked."""
    from seqrl.envs import make_raw

    family = make_raw(config.env, **config.env_kwargs)
    return family.single_task_params(family.split(split or config.tasks))


def per_task_trainer(config: Config, single: Trainer) -> Trainer:
    """One PPO learner per task of ``config.tasks``, vmapped inside each seed: ONE on-device run
    trains them all. The learner state has a leading task axis; metrics are means over tasks;
    evaluation runs each learner in its own task (``returns``: the tasks' episodes, task-major)."""
    params = task_params(config)
    n = int(jax.tree.leaves(params)[0].shape[0])

    def init(key: jax.Array) -> LearnerState:
        # one task after another (lax.map): XLA:CPU in jax 0.10.2 deadlocks at run time on the
        # vmapped init of brax bodies (as on some recurrent networks, see loop.init_seeds)
        keys = jax.random.split(key, n)
        return jax.lax.map(lambda a: single.init(a[0], task_params=a[1]), (keys, params))

    def update(state: LearnerState) -> tuple[LearnerState, dict]:
        state, metrics = jax.vmap(single.update)(state)
        return state, {
            k: jnp.nanmean(v) if k == "episode_return" else v.mean() for k, v in metrics.items()
        }

    def evaluate(state, key, num_episodes, deterministic):
        out = jax.vmap(lambda s, k: single.evaluate(s, k, num_episodes, deterministic))(
            state, jax.random.split(key, n)
        )
        return {"returns": out["returns"].reshape(-1), "task_returns": out["returns"]}

    return Trainer(
        init=init,
        update=update,
        evaluate=evaluate,
        num_updates=single.num_updates,
        steps_per_update=single.steps_per_update * n,
        # the tasks are the data-parallel axis: every leaf of the state runs over them
        data_axis=distributed.DataAxis(
            n,
            f"the number of {config.tasks} tasks",
            lambda s: jax.tree.map(lambda _: distributed.PartitionSpec(distributed.AXIS), s),
        ),
        per_task=PerTask(single, n),
        internals=single.internals,
    )


@dataclasses.dataclass(frozen=True)
class InContext:
    """In-context PPO's meta-RL protocol (a recurrent policy trained on trials of several
    episodes of one task, ``env_kwargs.episodes_per_trial``): on each task of a split, zero-shot
    is the first episode of a trial and few-shot the second (after one episode of experience;
    the policy's memory persists across a trial's episodes)."""

    config: Config
    actor: Actor
    protocols: tuple[str, ...] = ("in-context",)

    def evaluate(self, state, key, split: str, mode: str, protocol: str, rounds: int) -> dict:
        """``{"returns": [tasks, rounds * num_envs]}``."""
        from seqrl.envs import make_raw

        config = self.config
        family = make_raw(config.env, **config.env_kwargs)
        if getattr(family, "episodes_per_trial", 0) < 2:
            raise UserError(
                f"run trains on {config.env} without trials of >= 2 episodes "
                "(env_kwargs.episodes_per_trial): it has no in-context protocol"
            )
        episodes = rounds * config.num_envs
        venv, _ = self.actor.env(state, episodes)
        tasks = family.split(split)

        def per_task(params, key):
            return episode_returns(
                self.actor.policy(state, True),
                self.actor.initial_carry(episodes),
                venv,
                params,
                key,
                config.loop.eval_max_steps,
                family.episodes_per_trial,
            )["episode_returns"]

        n = jax.tree.leaves(tasks)[0].shape[0]
        params = family.single_task_params(tasks)
        out = jax.vmap(per_task)(params, jax.random.split(key, n))  # [tasks, episodes, k]
        return {"returns": out[..., 0 if mode == "zero-shot" else 1]}


def make_train(config: Config):
    """``train(key) -> (learner_state, metrics)``: the whole run as one jittable function."""
    return train_fn(make_trainer(config))
