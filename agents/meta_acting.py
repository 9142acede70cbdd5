"""Meta-DT's acting on a task family's tasks: its few-shot and zero-shot protocols and the
choice of its prompt (the agent's :class:`~seqrl.trainer.MetaEvaluation`, built by
:func:`seqrl.agents.meta_dt.make_trainer`; ``seqrl eval-meta`` scores what it returns).

Protocols:

- ``meta-dt``, zero-shot: no demonstrations; the task vector z comes from the agent's own last
  h transitions of the current episode. Few-shot: a zero-shot episode first; the length-k
  segment of it with the largest world-model error becomes the prompt of the evaluated episode
  (no expert data; ``meta.prompt: random`` takes a random segment instead, the ablation).
- ``prompt-dt``, few-shot: the prompt is the last k steps of an expert demo of the test task
  (privileged information, as in the Prompt-DT paper); zero-shot: no prompt.

A rollout runs one episode per lane, a lane being one task x one episode (``num_envs`` lanes
per task, task-major), on device (:func:`seqrl.evaluate.lane_rollout`) or, for a host-side
family (Meta-World), stepped from Python with the same acting functions jitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqrl.agents.dt import Window
from seqrl.agents.world_model import Context, WorldModel, context_at
from seqrl.data import load_meta_dataset
from seqrl.errors import UserError
from seqrl.evaluate import lane_params, lane_rollout
from seqrl.returns import returns_to_go


def window_sums(errors: jax.Array, k: int) -> jax.Array:
    """``errors[..., L]`` summed over every length-``k`` window: ``[..., L - k + 1]``."""
    c = jnp.concatenate([jnp.zeros(errors.shape[:-1] + (1,)), jnp.cumsum(errors, -1)], -1)
    return c[..., k:] - c[..., :-k]


def max_error_start(errors: jax.Array, k: int) -> jax.Array:
    """Start of the length-``k`` window with the largest summed error (the self-guided prompt)."""
    return jnp.argmax(window_sums(errors, k), axis=-1)


def task_features(tasks: Any) -> jax.Array:
    """The task pytree of a split (leading axis = task) as one float vector per task."""
    leaves = [jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1) for x in jax.tree.leaves(tasks)]
    return jnp.concatenate(leaves, axis=1)


def z_size(config: Any, features: jax.Array) -> int:
    """The width of the task vector the state tokens read: the true task's
    (``meta.oracle_task``, ``features`` [tasks, D]) or the world model's z."""
    return features.shape[-1] if config.meta.oracle_task else config.world_model.latent_dim


def segments(x, starts, k: int):
    """``x[lane, starts[lane] : starts[lane] + k]`` of every lane (``x``: ``[lanes, L, ...]``,
    numpy or jax)."""
    xp = jnp if isinstance(x, jax.Array) else np
    idx = starts[:, None] + xp.arange(k)[None]
    return xp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


@dataclasses.dataclass(frozen=True)
class Acting:
    """The acting functions of one learner state on one split's lanes (pure, jittable):
    ``initial_carry(prompt)``, ``empty_prompt()``, ``act(carry, obs, first, key) -> (carry,
    action)``, ``observe(carry, action, reward, next_obs) -> carry``, ``self_guided_prompt(traj,
    key)`` and ``demo_prompt()``; ``params``: the lanes' env params (None on a host family)."""

    initial_carry: Callable
    empty_prompt: Callable
    act: Callable
    observe: Callable
    self_guided_prompt: Callable
    demo_prompt: Callable
    params: Any


@dataclasses.dataclass(frozen=True)
class LaneShapes:
    """The shapes of one split's lanes."""

    tasks: int
    per_task: int
    obs_shape: tuple
    action_shape: tuple
    action_dtype: Any
    wm_action_dim: int  # actions as the world model reads them (discrete: one-hot)
    z_dim: int  # the task vector's width
    length: int  # steps per episode: the family's episode length, at most loop.eval_max_steps

    @property
    def lanes(self) -> int:
        return self.tasks * self.per_task

    @property
    def discrete(self) -> bool:
        return self.action_dtype == jnp.int32


def _push(buf, new):
    """Drop the oldest step of ``buf[lanes, K, ...]`` and append ``new[lanes, ...]``."""
    return jnp.concatenate([buf[:, 1:], new[:, None]], axis=1)


@dataclasses.dataclass
class MetaAgent:
    """Acting for :mod:`seqrl.agents.meta_dt` models (built by its ``make_trainer``)."""

    config: Any
    family: Any
    model: Any
    world_model: Any
    data: Any
    encode: Any
    _demos: dict = dataclasses.field(default_factory=dict)

    @property
    def protocols(self) -> tuple[str, ...]:
        """``prompt-dt`` first for a Prompt-DT run (expert prompts); it needs expert demos."""
        if self.config.meta.prompt == "expert":
            return ("prompt-dt", "meta-dt")
        return ("meta-dt", "prompt-dt") if self.config.prompt_dataset else ("meta-dt",)

    # -- prompts ------------------------------------------------------------------------------

    def prompt_demos(self, split: str):
        """Prompt-DT: the last k steps of the first expert demo of each task of ``split``
        (host arrays, read once; call it outside of any jax trace)."""
        if split not in self._demos:
            with jax.ensure_compile_time_eval():
                self._demos[split] = self._read_demos(split)
        return self._demos[split]

    def _read_demos(self, split: str):
        traj, tasks, _ = load_meta_dataset(self.config.prompt_dataset, self.family, split)
        traj = jax.tree.map(np.asarray, traj)
        first = self.family.num_train if split == "test" else 0
        rows = []
        for task in range(first, first + jax.tree.leaves(self.family.split(split))[0].shape[0]):
            hits = np.nonzero(tasks == task)[0]
            if hits.size == 0:
                raise UserError(
                    f"prompt dataset {self.config.prompt_dataset} has no demo of task {task}"
                )
            rows.append(int(hits[0]))
        rows = np.asarray(rows)
        k = self.config.meta.prompt_length
        lengths = traj.lengths[rows]
        rtg = np.asarray(returns_to_go(jnp.asarray(traj.rewards[rows]), jnp.asarray(lengths)))
        starts = lengths - k
        return {
            "obs": segments(traj.obs[rows], starts, k),
            "actions": segments(traj.actions[rows], starts, k),
            "rtg": segments(rtg, starts, k),
            "timesteps": (starts[:, None] + np.arange(k)[None]).astype(np.int32),
        }

    def _self_guided_prompt(self, state, lanes: LaneShapes, traj: dict, key) -> Window:
        """The highest-error length-k segment of each lane's own zero-shot episode (a random
        one with ``meta.prompt: random``), in the model's units."""
        kp, wmc = self.config.meta.prompt_length, self.config.world_model
        normalize = lambda obs: (obs - state.obs_mean) / state.obs_std
        obs_n, next_n = normalize(traj["obs"]), normalize(traj["next_obs"])
        a, r, valid = traj["actions"], traj["rewards"], traj["valid"]
        n, length = r.shape
        a_wm = (
            jax.nn.one_hot(a, lanes.wm_action_dim) if lanes.discrete else a.reshape(n, length, -1)
        )
        t = jnp.arange(length)
        ctx = jax.vmap(
            lambda o, aa, rr, nn: jax.vmap(
                lambda tt: context_at(o, aa, rr, nn, tt, wmc.horizon, wmc.freeze_at)
            )(t)
        )(obs_n, a_wm, r, next_n)
        err = self.world_model.apply(
            state.wm_params, ctx, obs_n, a_wm, r, next_n, method=WorldModel.errors
        )
        if self.config.meta.prompt == "random":
            start = jax.random.randint(key, (n,), 0, length - kp + 1)
        else:
            start = max_error_start(err * valid, kp)
        rtg = returns_to_go(r, valid.sum(1).astype(jnp.int32)) / self.config.dt.return_scale
        return Window(
            obs=segments(obs_n, start, kp),
            actions=segments(a.astype(lanes.action_dtype), start, kp),
            rtg=segments(rtg, start, kp),
            timesteps=(start[:, None] + jnp.arange(kp)[None]).astype(jnp.int32),
            mask=segments(valid, start, kp),
        )

    def _demo_prompt(self, state, lanes: LaneShapes, split: str) -> Window:
        demos = self.prompt_demos(split)
        rep = lambda x: jnp.repeat(jnp.asarray(x), lanes.per_task, axis=0)
        return Window(
            obs=(rep(demos["obs"]) - state.obs_mean) / state.obs_std,
            actions=rep(demos["actions"]).astype(lanes.action_dtype),
            rtg=rep(demos["rtg"]) / self.config.dt.return_scale,
            timesteps=rep(demos["timesteps"]),
            mask=jnp.ones((lanes.lanes, self.config.meta.prompt_length)),
        )

    def _empty_prompt(self, lanes: LaneShapes) -> Window:
        n, kp = lanes.lanes, self.config.meta.prompt_length
        return Window(
            obs=jnp.zeros((n, kp, *lanes.obs_shape)),
            actions=jnp.zeros((n, kp, *lanes.action_shape), lanes.action_dtype),
            rtg=jnp.zeros((n, kp)),
            timesteps=jnp.zeros((n, kp), jnp.int32),
            mask=jnp.zeros((n, kp)),
        )

    # -- acting -------------------------------------------------------------------------------

    def _lanes(self, split: str) -> LaneShapes:
        windows = self.data.windows
        return LaneShapes(
            tasks=int(jax.tree.leaves(self.family.split(split))[0].shape[0]),
            per_task=self.config.num_envs,
            obs_shape=tuple(windows.obs.shape[2:]),
            action_shape=tuple(windows.actions.shape[2:]),
            action_dtype=windows.actions.dtype,
            wm_action_dim=int(self.data.actions_wm.shape[2]),
            z_dim=z_size(self.config, self.data.task_features),
            length=min(self.family.episode_length, self.config.loop.eval_max_steps),
        )

    def _truth(self, split: str, lanes: LaneShapes):
        """``meta.oracle_task``: each lane's true task parameters (else None)."""
        if not self.config.meta.oracle_task:
            return None
        return jnp.repeat(task_features(self.family.split(split)), lanes.per_task, axis=0)

    def _initial_carry(self, lanes: LaneShapes, prompt: Window, target) -> dict:
        """The DT's context of the last K steps and the world model's of the last h, empty."""
        n, k, h = lanes.lanes, self.config.dt.context, self.config.world_model.horizon
        zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((n, *shape), dtype)
        return {
            "obs": zeros(k, *lanes.obs_shape),
            "actions": zeros(k, *lanes.action_shape, dtype=lanes.action_dtype),
            "rtg": zeros(k),
            "timesteps": zeros(k, dtype=jnp.int32),
            "mask": zeros(k),
            "z": zeros(k, lanes.z_dim),
            "ctx_obs": zeros(h, *lanes.obs_shape),
            "ctx_actions": zeros(h, lanes.wm_action_dim),
            "ctx_rewards": zeros(h),
            "ctx_mask": zeros(h),
            "ctx_next_obs": zeros(h, *lanes.obs_shape),
            "rtg_now": jnp.broadcast_to(target, (n,)),
            "prompt": prompt,
        }

    def _act(self, state, lanes: LaneShapes, deterministic: bool, truth=None):
        """``act(carry, obs, first, key) -> (carry, action)`` (a policy step of
        :func:`seqrl.evaluate.rollout`): z from the context of the last h transitions (held from
        step ``world_model.freeze_at`` on), the step appended to the DT's context, the action of
        its last token, or the scripted ``meta.opening``'s during its first steps."""
        m, n = self.config.meta, lanes.lanes
        uses_z = m.context or m.oracle_task
        freeze_at = self.config.world_model.freeze_at
        opening = jnp.asarray(m.opening, jnp.float32).reshape(-1, *lanes.action_shape)

        def act(carry, obs, first, key):
            carry = dict(carry)
            t = jnp.where(first, 0, carry["timesteps"][:, -1] + 1)
            z = jnp.zeros((n, lanes.z_dim)) if truth is None else truth  # the oracle's
            if m.context:
                names = ("ctx_obs", "ctx_actions", "ctx_rewards", "ctx_mask", "ctx_next_obs")
                ctx = Context(*(carry[name] for name in names))
                z = self.encode(state.wm_params, ctx, (n,))
                if freeze_at:  # z_T from step T on
                    z = jnp.where((t > freeze_at)[:, None], carry["z"][:, -1], z)
            obs_n = (obs - state.obs_mean) / state.obs_std
            carry["obs"] = _push(carry["obs"], obs_n)
            blank = jnp.zeros((n, *lanes.action_shape), lanes.action_dtype)
            carry["actions"] = _push(carry["actions"], blank)
            carry["rtg"] = _push(carry["rtg"], carry["rtg_now"])
            carry["timesteps"] = _push(carry["timesteps"], t.astype(jnp.int32))
            carry["mask"] = _push(carry["mask"], jnp.ones(n))
            carry["z"] = _push(carry["z"], z)
            win = Window(*(carry[name] for name in ("obs", "actions", "rtg", "timesteps", "mask")))
            dist = self.model.apply(
                state.params,
                win,
                carry["z"] if uses_z else None,
                carry["prompt"] if m.prompt != "none" else None,
            )
            action = (dist.mode() if deterministic else dist.sample(key))[:, -1]
            if len(m.opening):
                scripted = opening[jnp.minimum(t, len(m.opening) - 1)]
                action = jnp.where((t < len(m.opening))[:, None], scripted, action)
            carry["actions"] = carry["actions"].at[:, -1].set(action)
            return carry, action

        return act

    def _observe(self, state, lanes: LaneShapes):
        """``observe(carry, action, reward, next_obs) -> carry``: the transition into the
        world model's context, the reward off the return-to-go."""
        n, scale = lanes.lanes, self.config.dt.return_scale

        def observe(carry, action, reward, next_obs):
            carry = dict(carry)
            a = jax.nn.one_hot(action, lanes.wm_action_dim) if lanes.discrete else action
            carry["ctx_obs"] = _push(carry["ctx_obs"], carry["obs"][:, -1])
            carry["ctx_actions"] = _push(carry["ctx_actions"], a.reshape(n, -1))
            carry["ctx_rewards"] = _push(carry["ctx_rewards"], reward)
            carry["ctx_mask"] = _push(carry["ctx_mask"], jnp.ones(n))
            next_n = (next_obs - state.obs_mean) / state.obs_std
            carry["ctx_next_obs"] = _push(carry["ctx_next_obs"], next_n)
            carry["rtg_now"] = carry["rtg_now"] - reward / scale
            return carry

        return observe

    def acting(self, state, split: str, deterministic: bool, target_return: float | None) -> Acting:
        """The acting functions of ``state`` on ``split``'s lanes (``num_envs`` per task);
        ``target_return`` (unscaled) replaces the run's."""
        lanes = self._lanes(split)
        fam = self.family
        target = (
            state.target_return
            if target_return is None
            else target_return / self.config.dt.return_scale
        )
        host = getattr(fam, "host", False)
        return Acting(
            initial_carry=lambda prompt: self._initial_carry(lanes, prompt, target),
            empty_prompt=lambda: self._empty_prompt(lanes),
            act=self._act(state, lanes, deterministic, self._truth(split, lanes)),
            observe=self._observe(state, lanes),
            self_guided_prompt=lambda traj, key: self._self_guided_prompt(state, lanes, traj, key),
            demo_prompt=lambda: self._demo_prompt(state, lanes, split),
            params=None if host else lane_params(fam, fam.split(split), lanes.per_task),
        )

    # -- the protocols ------------------------------------------------------------------------

    def _check(self, protocol: str) -> None:
        if protocol not in self.protocols:
            raise UserError(
                f"--protocol {protocol} needs a prompt_dataset of expert demos; this run has none"
            )

    def evaluate(
        self,
        state,
        key,
        split: str,
        mode: str,
        protocol: str,
        rounds: int,
        deterministic: bool = True,
        target_return: float | None = None,
    ) -> dict[str, jax.Array]:
        """Returns ``{"returns": [tasks, rounds * num_envs]}`` (jittable in ``state``/``key``;
        for a host-side family, see :meth:`evaluate_host`). ``target_return`` replaces the
        run's (unscaled)."""
        self._check(protocol)
        if getattr(self.family, "host", False):
            return self.evaluate_host(
                state, key, split, mode, protocol, rounds, deterministic, target_return
            )
        fns = self.acting(state, split, deterministic, target_return)
        fam, length = self.family, self._lanes(split).length
        use_prompt = self.config.meta.prompt != "none"

        def one_round(key):
            key_zero, key_few = jax.random.split(key)
            run = lambda prompt, key: lane_rollout(
                fam, fns.params, key, fns.act, fns.observe, fns.initial_carry(prompt), length
            )
            if mode == "zero-shot" or not use_prompt:
                return run(fns.empty_prompt(), key_zero)[2]
            if protocol == "prompt-dt":
                return run(fns.demo_prompt(), key_few)[2]
            _, traj, _ = run(fns.empty_prompt(), key_zero)
            return run(fns.self_guided_prompt(traj, key_few), key_few)[2]

        returns = jax.lax.map(one_round, jax.random.split(key, rounds))  # [rounds, lanes]
        return {"returns": self._task_major(returns, split)}

    def _task_major(self, returns, split: str):
        """[rounds, lanes] (lanes task-major) -> [tasks, rounds * num_envs]."""
        n = jax.tree.leaves(self.family.split(split))[0].shape[0]
        per, rounds = self.config.num_envs, returns.shape[0]
        return returns.reshape(rounds, n, per).transpose(1, 0, 2).reshape(n, rounds * per)

    def _host_acting(self, setting: tuple) -> dict:
        """The acting functions for a host family, jitted once per ``setting`` (split,
        deterministic, target_return) with the learner state as an argument."""
        cache = self.__dict__.setdefault("_host_fns", {})
        if setting not in cache:
            of = lambda st, name, *a: getattr(self.acting(st, *setting), name)(*a)
            fns = {
                name: jax.jit(lambda st, *a, name=name: of(st, name, *a))
                for name in (
                    "initial_carry",
                    "empty_prompt",
                    "act",
                    "observe",
                    "self_guided_prompt",
                )
            }
            fns["demo_prompt"] = lambda st: of(st, "demo_prompt")
            cache[setting] = fns
        return cache[setting]

    def evaluate_host(self, state, key, split, mode, protocol, rounds, deterministic, target):
        """:meth:`evaluate` for a family stepped on the host (Meta-World): the same protocol
        and acting functions, jitted per step with ``state`` as an argument, while
        ``family.rollout`` steps the envs from Python. Not jittable; adds ``"success"``
        ([tasks, rounds * num_envs], 1 if the episode ever succeeded)."""
        fam = self.family
        f = self._host_acting((split, deterministic, target))
        tasks = np.repeat(np.asarray(fam.split(split)), self.config.num_envs)
        use_prompt = self.config.meta.prompt != "none"
        act = lambda carry, obs, first, k: f["act"](state, carry, obs, first, k)
        observe = lambda carry, a, r, o: f["observe"](state, carry, a, r, o)

        def run(prompt, key):
            carry = f["initial_carry"](state, prompt)
            return fam.rollout(tasks, key, act, observe, carry, self._lanes(split).length)

        returns, success = [], []
        for round_key in jax.random.split(key, rounds):
            key_zero, key_few = jax.random.split(round_key)
            if mode == "zero-shot" or not use_prompt:
                _, traj, ret = run(f["empty_prompt"](state), key_zero)
            elif protocol == "prompt-dt":
                _, traj, ret = run(f["demo_prompt"](state), key_few)
            else:
                _, first, _ = run(f["empty_prompt"](state), key_zero)
                first = {k: first[k] for k in ("obs", "actions", "rewards", "next_obs", "valid")}
                _, traj, ret = run(f["self_guided_prompt"](state, first, key_few), key_few)
            returns.append(np.asarray(ret))
            success.append(traj["success"].max(axis=1))
        return {
            "returns": np.asarray(self._task_major(np.stack(returns), split)),
            "success": np.asarray(self._task_major(np.stack(success), split)),
        }
