"""Few-shot and zero-shot evaluation on a task family's held-out tasks (``seqrl eval-meta``).

Every agent is run on the same tasks (``family.split(split)``) and scored the same way: the
return of each task (mean over episodes and seeds), mean +- std over tasks and seeds, and the
normalized score ``(R - R_random) / (R_oracle - R_random)`` per task, with R_random the return
of uniformly random actions and R_oracle the family's oracle policy (where it has one) or the
best return of the expert demos.

Protocols (REFERENCE.md section 6):

- Meta-DT, zero-shot: no demonstrations; the task vector z comes from the agent's own last h
  transitions of the current episode.
- Meta-DT, few-shot: a zero-shot episode first; the length-k segment of it with the largest
  world-model error becomes the prompt of the evaluated episode (no expert data).
- Prompt-DT, few-shot: the prompt is the last k steps of an expert demo of the test task
  (privileged information, as in the Prompt-DT paper); zero-shot: no prompt.
- In-context PPO (S5 across tasks, trials of several episodes): zero-shot = the first episode of
  a trial, few-shot = the second (after one episode of experience of the task).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqrl.errors import UserError

MODES = ("zero-shot", "few-shot")
PROTOCOLS = ("meta-dt", "prompt-dt")


def parse_mode(text: str) -> str:
    """``zero-shot`` / ``few-shot`` (no bool parsing: ``False`` is an error, not True)."""
    if text not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {text!r}")
    return text


def window_sums(errors: jax.Array, k: int) -> jax.Array:
    """``errors[..., L]`` summed over every length-``k`` window: ``[..., L - k + 1]``."""
    c = jnp.concatenate([jnp.zeros(errors.shape[:-1] + (1,)), jnp.cumsum(errors, -1)], -1)
    return c[..., k:] - c[..., :-k]


def max_error_start(errors: jax.Array, k: int) -> jax.Array:
    """Start of the length-``k`` window with the largest summed error (the self-guided prompt)."""
    return jnp.argmax(window_sums(errors, k), axis=-1)


# ---------------------------------------------------------------------------------------------
# Rolling out one episode per lane (a lane = one task x one episode)
# ---------------------------------------------------------------------------------------------


def lane_params(family, tasks, per_task: int):
    """Single-task params for ``per_task`` lanes of each task (task-major)."""
    rep = jax.tree.map(lambda x: jnp.repeat(x, per_task, axis=0), tasks)
    return family.single_task_params(rep)


def rollout(family, params, key, act, observe, carry, length: int):
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


def reference_returns(
    family, tasks, key, episodes: int = 16, dataset: str | None = None, split: str = "test"
) -> dict[str, np.ndarray]:
    """Per task: the return of uniformly random actions and of an oracle: the family's oracle
    policy (``oracle_action``, or a host family's scripted policy), else the best episode of
    that task in ``dataset``, else NaN; ``source`` names which. ``episodes`` episodes each
    (a quarter of them, at least 2, on a host-side family)."""
    n = jax.tree.leaves(tasks)[0].shape[0]
    space = family.action_space(family.default_params)
    length = family.episode_length

    def random_act(carry, obs, t, key):
        return carry, jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))

    observe = lambda carry, action, reward, next_obs: carry
    if getattr(family, "host", False):
        episodes = max(2, episodes // 4)
        lanes = np.repeat(np.asarray(tasks), episodes)
        act = jax.jit(random_act)
        random = family.rollout(lanes, key, act, observe, (), length)[2]
        oracle = family.rollout(lanes, key, ("scripted", 0.0), None, None, length)[2]
        return {
            "random": np.asarray(random).reshape(n, episodes).mean(1),
            "oracle": np.asarray(oracle).reshape(n, episodes).mean(1),
            "source": f"scripted policy ({family.oracle_name})",
        }
    params = lane_params(family, tasks, episodes)
    _, _, random = jax.jit(lambda k: rollout(family, params, k, random_act, observe, (), length))(
        key
    )
    out = {"random": np.asarray(random).reshape(n, episodes).mean(1)}
    if hasattr(family, "oracle_action"):
        # the oracle reads the env state, so it steps the family itself
        def oracle(key):
            lanes = n * episodes
            obs, state = jax.vmap(family.reset)(jax.random.split(key, lanes), params)

            def step(c, _):
                state, total, alive = c
                action = jax.vmap(family.oracle_action)(state)
                _, state, r, term, trunc, _ = jax.vmap(family.step)(
                    jax.random.split(key, lanes), state, action, params
                )
                total = total + r * alive
                return (state, total, alive * ~jnp.logical_or(term, trunc)), None

            (_, total, _), _ = jax.lax.scan(
                step, (state, jnp.zeros(lanes), jnp.ones(lanes)), None, length
            )
            return total

        out["oracle"] = np.asarray(jax.jit(oracle)(key)).reshape(n, episodes).mean(1)
        out["source"] = "oracle policy"
    elif dataset:  # ``tasks`` is ``family.split(split)``
        out["oracle"] = best_dataset_returns(dataset, family, split)
        out["source"] = f"best episode per task in {dataset}"
    else:
        out["oracle"] = np.full(n, np.nan)
        out["source"] = "none"
    return out


def best_dataset_returns(dataset: str, family, split: str) -> np.ndarray:
    """The best episode return of each task of ``split`` (``train`` / ``test``) in a
    multi-task dataset (NaN for a task it has no episode of)."""
    from seqrl.agents.meta_dt import load_meta_dataset

    traj, episode_tasks, _ = load_meta_dataset(dataset, family, split)
    returns = np.asarray(traj.returns)
    first = 0 if split == "train" else family.num_train
    n = family.num_train if split == "train" else family.num_test
    return np.asarray(
        [
            returns[episode_tasks == t].max() if (episode_tasks == t).any() else np.nan
            for t in range(first, first + n)
        ]
    )


# ---------------------------------------------------------------------------------------------
# Meta-DT / Prompt-DT / plain DT
# ---------------------------------------------------------------------------------------------


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

    def _prompt_demos(self, split: str):
        """Prompt-DT: the last k steps of the first expert demo of each task of ``split``
        (host arrays, read once; call it outside of any jax trace)."""
        if split not in self._demos:
            with jax.ensure_compile_time_eval():
                self._demos[split] = self._read_demos(split)
        return self._demos[split]

    def _read_demos(self, split: str):
        from seqrl.agents.meta_dt import load_meta_dataset

        traj, tasks, _ = load_meta_dataset(self.config.prompt_dataset, self.family, split)
        traj = jax.tree.map(np.asarray, traj)
        first = self.family.num_train if split == "test" else 0
        wanted = range(first, first + jax.tree.leaves(self.family.split(split))[0].shape[0])
        rows = []
        for task in wanted:
            hits = np.nonzero(tasks == task)[0]
            if hits.size == 0:
                raise UserError(
                    f"prompt dataset {self.config.prompt_dataset} has no demo of task {task}"
                )
            rows.append(int(hits[0]))
        rows = np.asarray(rows)
        k = self.config.meta.prompt_length
        lengths = traj.lengths[rows]
        rewards = np.where(
            np.arange(traj.rewards.shape[1]) < lengths[:, None], traj.rewards[rows], 0
        )
        rtg = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1]
        idx = (lengths - k)[:, None] + np.arange(k)[None]
        take = lambda x: np.take_along_axis(
            np.asarray(x)[rows], idx.reshape(idx.shape + (1,) * (np.ndim(x) - 2)), axis=1
        )
        return {
            "obs": take(traj.obs),
            "actions": take(traj.actions),
            "rtg": np.take_along_axis(rtg, idx, 1),
            "timesteps": idx.astype(np.int32),
        }

    def _policy(self, state, split: str, deterministic: bool, target_return: float | None):
        """The acting functions of ``state`` on ``split``'s lanes (``num_envs`` per task):
        ``initial_carry(prompt)``, ``empty_prompt()``, ``act``, ``observe``,
        ``self_guided_prompt(traj, key)``, ``demo_prompt()`` (all pure, jittable)."""
        from seqrl.agents.dt import Window

        c, fam = self.config, self.family
        d, m, wmc = c.dt, c.meta, c.world_model
        k, h, kp = d.context, wmc.horizon, m.prompt_length
        tasks = fam.split(split)
        n = jax.tree.leaves(tasks)[0].shape[0]
        per = c.num_envs
        lanes = n * per
        params = None if getattr(fam, "host", False) else lane_params(fam, tasks, per)
        obs_dim = self.data.windows.obs.shape[2:]
        act = self.data.windows.actions
        act_shape, act_dtype = act.shape[2:], act.dtype
        a_wm = self.data.actions_wm.shape[2]
        length = fam.episode_length
        discrete = act_dtype == jnp.int32
        scale = d.return_scale

        def empty_prompt():
            return Window(
                obs=jnp.zeros((lanes, kp, *obs_dim)),
                actions=jnp.zeros((lanes, kp, *act_shape), act_dtype),
                rtg=jnp.zeros((lanes, kp)),
                timesteps=jnp.zeros((lanes, kp), jnp.int32),
                mask=jnp.zeros((lanes, kp)),
            )

        def initial_carry(prompt):
            return {
                "obs": jnp.zeros((lanes, k, *obs_dim)),
                "actions": jnp.zeros((lanes, k, *act_shape), act_dtype),
                "rtg": jnp.zeros((lanes, k)),
                "timesteps": jnp.zeros((lanes, k), jnp.int32),
                "mask": jnp.zeros((lanes, k)),
                "z": jnp.zeros((lanes, k, wmc.latent_dim)),
                "ctx_obs": jnp.zeros((lanes, h, *obs_dim)),
                "ctx_actions": jnp.zeros((lanes, h, a_wm)),
                "ctx_rewards": jnp.zeros((lanes, h)),
                "ctx_mask": jnp.zeros((lanes, h)),
                "ctx_next_obs": jnp.zeros((lanes, h, *obs_dim)),
                "rtg_now": jnp.broadcast_to(target, (lanes,)),
                "prompt": prompt,
            }

        target = state.target_return if target_return is None else target_return / d.return_scale
        push = lambda buf, new: jnp.concatenate([buf[:, 1:], new[:, None]], axis=1)
        normalize = lambda obs: (obs - state.obs_mean) / state.obs_std
        use_prompt = m.prompt != "none"

        def act_fn(carry, obs, t, key):
            from seqrl.agents.world_model import Context

            carry = dict(carry)
            z = jnp.zeros((lanes, wmc.latent_dim))
            if m.context:
                ctx = Context(
                    carry["ctx_obs"],
                    carry["ctx_actions"],
                    carry["ctx_rewards"],
                    carry["ctx_mask"],
                    carry["ctx_next_obs"],
                )
                z = self.encode(state.wm_params, ctx, (lanes,))
            carry["obs"] = push(carry["obs"], normalize(obs))
            carry["actions"] = push(carry["actions"], jnp.zeros((lanes, *act_shape), act_dtype))
            carry["rtg"] = push(carry["rtg"], carry["rtg_now"])
            carry["timesteps"] = push(carry["timesteps"], jnp.full((lanes,), t, jnp.int32))
            carry["mask"] = push(carry["mask"], jnp.ones(lanes))
            carry["z"] = push(carry["z"], z)
            win = Window(
                carry["obs"], carry["actions"], carry["rtg"], carry["timesteps"], carry["mask"]
            )
            dist = self.model.apply(
                state.params,
                win,
                carry["z"] if m.context else None,
                carry["prompt"] if use_prompt else None,
            )
            action = (dist.mode() if deterministic else dist.sample(key))[:, -1]
            carry["actions"] = carry["actions"].at[:, -1].set(action)
            return carry, action

        def observe(carry, action, reward, next_obs):
            carry = dict(carry)
            a = jax.nn.one_hot(action, a_wm) if discrete else action.reshape(lanes, -1)
            carry["ctx_obs"] = push(carry["ctx_obs"], carry["obs"][:, -1])
            carry["ctx_actions"] = push(carry["ctx_actions"], a)
            carry["ctx_rewards"] = push(carry["ctx_rewards"], reward)
            carry["ctx_mask"] = push(carry["ctx_mask"], jnp.ones(lanes))
            carry["ctx_next_obs"] = push(carry["ctx_next_obs"], normalize(next_obs))
            carry["rtg_now"] = carry["rtg_now"] - reward / scale
            return carry

        def self_guided_prompt(traj, key) -> Window:
            """The highest-error length-k segment of each lane's own zero-shot episode."""
            from seqrl.agents.world_model import WorldModel, context_at

            obs_n = normalize(traj["obs"])
            next_n = normalize(traj["next_obs"])
            a = traj["actions"]
            a_1h = jax.nn.one_hot(a, a_wm) if discrete else a.reshape(lanes, length, -1)
            r = traj["rewards"]
            t = jnp.arange(length)
            ctx = jax.vmap(
                lambda o, aa, rr, nn: jax.vmap(lambda tt: context_at(o, aa, rr, nn, tt, h))(t)
            )(obs_n, a_1h, r, next_n)
            err = self.world_model.apply(
                state.wm_params, ctx, obs_n, a_1h, r, next_n, method=WorldModel.errors
            )
            err = err * traj["valid"]
            if m.prompt == "random":
                start = jax.random.randint(key, (lanes,), 0, length - kp + 1)
            else:
                start = max_error_start(err, kp)
            idx = start[:, None] + jnp.arange(kp)[None]
            rtg = jnp.cumsum(r[:, ::-1], axis=1)[:, ::-1] / scale
            take = lambda x: jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), 1)
            return Window(
                obs=take(obs_n),
                actions=take(a.astype(act_dtype)),
                rtg=take(rtg),
                timesteps=idx.astype(jnp.int32),
                mask=take(traj["valid"]),
            )

        def demo_prompt() -> Window:
            demos = self._prompt_demos(split)
            rep = lambda x: jnp.repeat(jnp.asarray(x), per, axis=0)
            return Window(
                obs=normalize(rep(demos["obs"])),
                actions=rep(demos["actions"]).astype(act_dtype),
                rtg=rep(demos["rtg"]) / scale,
                timesteps=rep(demos["timesteps"]),
                mask=jnp.ones((lanes, kp)),
            )

        return {
            "initial_carry": initial_carry,
            "empty_prompt": empty_prompt,
            "act": act_fn,
            "observe": observe,
            "self_guided_prompt": self_guided_prompt,
            "demo_prompt": demo_prompt,
            "lanes": lanes,
            "params": params,
        }

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
        if getattr(self.family, "host", False):
            return self.evaluate_host(
                state, key, split, mode, protocol, rounds, deterministic, target_return
            )
        fns = self._policy(state, split, deterministic, target_return)
        fam, length = self.family, self.family.episode_length
        use_prompt = self.config.meta.prompt != "none"

        def one_round(key):
            key_zero, key_few = jax.random.split(key)
            run = lambda prompt, key: rollout(
                fam,
                fns["params"],
                key,
                fns["act"],
                fns["observe"],
                fns["initial_carry"](prompt),
                length,
            )
            if mode == "zero-shot" or not use_prompt:
                return run(fns["empty_prompt"](), key_zero)[2]
            if protocol == "prompt-dt":
                return run(fns["demo_prompt"](), key_few)[2]
            _, traj, _ = run(fns["empty_prompt"](), key_zero)
            return run(fns["self_guided_prompt"](traj, key_few), key_few)[2]

        returns = jax.lax.map(one_round, jax.random.split(key, rounds))  # [rounds, lanes]
        return {"returns": self._task_major(returns, split)}

    def _task_major(self, returns, split: str):
        """[rounds, lanes] (lanes task-major) -> [tasks, rounds * num_envs]."""
        n = jax.tree.leaves(self.family.split(split))[0].shape[0]
        per, rounds = self.config.num_envs, returns.shape[0]
        return returns.reshape(rounds, n, per).transpose(1, 0, 2).reshape(n, rounds * per)

    def evaluate_host(
        self,
        state,
        key,
        split: str,
        mode: str,
        protocol: str,
        rounds: int,
        deterministic: bool = True,
        target_return: float | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`evaluate` for a family stepped on the host (Meta-World): the same protocol
        and acting functions, jitted per step with ``state`` as an argument, while
        ``family.rollout`` steps the envs from Python. Not jittable; adds ``"success"``
        ([tasks, rounds * num_envs], 1 if the episode ever succeeded)."""
        fam = self.family
        setting = (split, deterministic, target_return)
        cache = self.__dict__.setdefault("_host_fns", {})
        if setting not in cache:  # compiled once per setting, state passed as an argument
            policy = lambda st, name, *a: self._policy(st, *setting)[name](*a)
            fns = {
                name: jax.jit(lambda st, *a, name=name: policy(st, name, *a))
                for name in ("initial_carry", "empty_prompt", "act", "observe")
            }
            fns["self_guided_prompt"] = jax.jit(
                lambda st, traj, k: policy(st, "self_guided_prompt", traj, k)
            )
            fns["demo_prompt"] = lambda st: policy(st, "demo_prompt")
            cache[setting] = fns
        f = cache[setting]
        tasks = np.repeat(np.asarray(fam.split(split)), self.config.num_envs)
        use_prompt = self.config.meta.prompt != "none"
        act = lambda carry, obs, t, k: f["act"](state, carry, obs, t, k)
        observe = lambda carry, a, r, o: f["observe"](state, carry, a, r, o)

        def run(prompt, key):
            carry = f["initial_carry"](state, prompt)
            return fam.rollout(tasks, key, act, observe, carry, fam.episode_length)

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
                prompt = f["self_guided_prompt"](state, first, key_few)
                _, traj, ret = run(prompt, key_few)
            returns.append(np.asarray(ret))
            success.append(traj["success"].max(axis=1))
        return {
            "returns": np.asarray(self._task_major(np.stack(returns), split)),
            "success": np.asarray(self._task_major(np.stack(success), split)),
        }


# ---------------------------------------------------------------------------------------------
# In-context PPO (trials across tasks)
# ---------------------------------------------------------------------------------------------


def evaluate_incontext(trainer, config, state, key, split: str, episodes: int):
    """``{"zero-shot": [tasks, episodes], "few-shot": [tasks, episodes]}``: first and second
    episode of a trial on each task of ``split`` (the policy's memory persists in a trial)."""
    from seqrl.envs import make_raw
    from seqrl.evaluate import episode_returns

    family = make_raw(config.env, **config.env_kwargs)
    if getattr(family, "episodes_per_trial", 0) < 2:
        raise UserError(
            f"run trains on {config.env} without trials of >= 2 episodes "
            "(env_kwargs.episodes_per_trial): it has no in-context protocol"
        )
    venv, _ = trainer.parts["rollout_env"](state, episodes)
    tasks = family.split(split)
    params = family.single_task_params(tasks)
    net = trainer.parts["network"]

    def per_task(p, key):
        return episode_returns(
            trainer.parts["policy_step"](state, True),
            net.initialize_carry(episodes),
            venv,
            p,
            key,
            config.loop.eval_max_steps,
            family.episodes_per_trial,
        )["episode_returns"]

    n = jax.tree.leaves(tasks)[0].shape[0]
    out = jax.vmap(per_task)(params, jax.random.split(key, n))  # [tasks, episodes, k]
    return {"zero-shot": out[..., 0], "few-shot": out[..., 1]}


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def summarize(returns: np.ndarray, refs: dict[str, np.ndarray]) -> dict:
    """``returns``: [seeds, tasks, episodes]."""
    per_task = returns.mean(axis=2)  # [seeds, tasks]
    norm = (per_task - refs["random"][None]) / (refs["oracle"] - refs["random"])[None]
    return {
        "return_mean": float(per_task.mean()),
        "return_std": float(per_task.std()),
        "normalized_mean": float(np.nanmean(norm)),
        "normalized_std": float(np.nanstd(norm)),
        "per_task_return": [float(r) for r in per_task.mean(0)],
        "per_task_normalized": [float(r) for r in np.nanmean(norm, 0)],
        "random_return": [float(r) for r in refs["random"]],
        "oracle_return": [float(r) for r in refs["oracle"]],
    }


def eval_meta(
    run_dir: str | Path,
    mode: str,
    split: str = "test",
    protocol: str | None = None,
    rounds: int = 4,
    seed: int = 0,
    reference_dataset: str | None = None,
    log=print,
) -> dict:
    """Evaluates a trained run on ``split`` under ``mode`` and ``protocol``; writes
    ``eval_meta_<mode>_<split>.json`` into the run directory and returns it.

    The normalized score's oracle is the family's oracle policy where it has one, else the best
    episode of each task in ``reference_dataset`` (default: the run's prompt_dataset or
    dataset; an expert dataset is the meaningful choice)."""
    from seqrl import config as cfg
    from seqrl.api import resolve_config
    from seqrl.checkpoint import Checkpointer
    from seqrl.envs import make_raw
    from seqrl.envs.meta import SPLITS
    from seqrl.loop import map_seeds, seed_keys, write_json_atomic
    from seqrl.runtime import configure_jax

    mode = parse_mode(mode)
    if split not in SPLITS[:2]:
        raise UserError(f"--split must be train or test, got {split!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    configure_jax()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    conf = resolve_config(None, None, resume=run_dir)
    if protocol is None:
        protocol = "prompt-dt" if conf.agent == "prompt_dt" else "meta-dt"
    if not conf.env.startswith("meta/"):
        raise UserError(f"run {run_dir} trained on {conf.env}, not a task family (meta/...)")
    if protocol == "prompt-dt" and not getattr(conf, "prompt_dataset", ""):
        raise UserError(f"run {run_dir} has no prompt_dataset: --protocol prompt-dt needs one")
    trainer = cfg.agent_module(conf.agent).make_trainer(conf)
    keys = seed_keys(conf.seed, conf.num_seeds)
    abstract = jax.eval_shape(jax.vmap(trainer.init), keys)
    ckpt = Checkpointer(run_dir / "checkpoints")
    if not ckpt.steps():
        raise UserError(f"run {run_dir} has no checkpoint")
    states, _ = ckpt.restore(abstract)
    key = jax.random.PRNGKey(seed)
    family = make_raw(conf.env, **conf.env_kwargs)
    family = getattr(family, "family", family)  # trials -> the family
    if conf.agent == "ppo":
        fn = jax.jit(
            jax.vmap(
                lambda s, k: evaluate_incontext(trainer, conf, s, k, split, rounds * conf.num_envs)[
                    mode
                ]
            )
        )
    elif conf.agent == "meta_dt" or "meta_agent" in trainer.parts:
        agent = trainer.parts["meta_agent"]
        one = lambda s, k: agent.evaluate(s, k, split, mode, protocol, rounds)["returns"]
        if getattr(family, "host", False):  # Meta-World: envs stepped on the host, not jitted
            fn = lambda states, keys: map_seeds(one, states, keys)
        else:
            fn = jax.jit(jax.vmap(one))
    else:
        raise UserError(f"run {run_dir} ({conf.agent}) has no meta-RL evaluation")
    returns = np.asarray(fn(states, jax.random.split(key, conf.num_seeds)))
    if reference_dataset is None:
        reference_dataset = getattr(conf, "prompt_dataset", "") or getattr(conf, "dataset", "")
    refs = reference_returns(
        family,
        family.split(split),
        jax.random.fold_in(key, 1),
        dataset=reference_dataset or None,
        split=split,
    )
    result = {
        "run_dir": str(run_dir),
        "agent": conf.agent,
        "env": conf.env,
        "mode": mode,
        "split": split,
        "protocol": protocol,
        "seeds": conf.num_seeds,
        "episodes_per_task": int(returns.shape[2]),
        "oracle": refs.pop("source"),
        **summarize(returns, refs),
    }
    out = run_dir / f"eval_meta_{mode}_{split}.json"
    write_json_atomic(out, result)
    log(
        f"{conf.agent} {mode} ({protocol}) on {split} tasks: return "
        f"{result['return_mean']:.2f} +- {result['return_std']:.2f}, normalized "
        f"{result['normalized_mean']:.3f} +- {result['normalized_std']:.3f}"
    )
    for i, (r, s) in enumerate(zip(result["per_task_return"], result["per_task_normalized"])):
        log(f"  task {i}: return {r:8.2f}  normalized {s:6.3f}")
    log(f"results: {out}")
    return result


def random_episodes(family, tasks, per_task: int, key: jax.Array):
    """``per_task`` episodes of uniformly random actions in each task of ``tasks`` (task-major),
    as padded ``seqrl.data.Trajectories``: data whose behaviour says nothing about the task, so
    only rewards (and dynamics) can reveal it."""
    space = family.action_space(family.default_params)
    length = family.episode_length

    def act(carry, obs, t, key):
        return carry, jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))

    params = lane_params(family, tasks, per_task)
    _, traj, _ = rollout(family, params, key, act, lambda carry, *_: carry, (), length)
    return rollout_trajectories(traj, length)


def rollout_trajectories(traj: dict, length: int):
    """A :func:`rollout`'s (or a host family's) ``traj`` dict as padded
    ``seqrl.data.Trajectories``: steps after an episode's end zeroed, an episode that stopped
    before ``length`` (the family's time limit) terminated, one that reached it truncated."""
    from seqrl.data import Trajectories

    valid = jnp.asarray(traj["valid"])
    lengths = valid.sum(1).astype(jnp.int32)
    last = jnp.arange(valid.shape[1])[None] == (lengths - 1)[:, None]
    pad = lambda x: jnp.asarray(x) * valid.reshape(valid.shape + (1,) * (jnp.ndim(x) - 2))
    return Trajectories(
        obs=pad(traj["obs"]),
        actions=pad(traj["actions"]),
        rewards=pad(traj["rewards"]),
        terminated=last & (lengths < length)[:, None],
        truncated=last & (lengths == length)[:, None],
        lengths=lengths,
        final_obs=jnp.asarray(traj["next_obs"])[jnp.arange(lengths.shape[0]), lengths - 1],
    )
