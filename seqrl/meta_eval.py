"""Few-shot and zero-shot evaluation on a task family's held-out tasks (``seqrl eval-meta``).

Every agent is run on the same tasks (``family.split(split)``) and scored the same way: the
return of each task (mean over episodes and seeds), mean +- std over tasks and seeds, and the
normalized score ``(R - R_random) / (R_oracle - R_random)`` per task, with R_random the return
of uniformly random actions and R_oracle the family's oracle policy (where it has one) or the
best return of the expert demos.

The protocols themselves belong to the agents (the trainer's ``meta``, see
:class:`seqrl.trainer.MetaEvaluation`): Meta-DT's self-guided prompt and Prompt-DT's expert
prompt in :mod:`seqrl.agents.meta_acting`, in-context PPO's trials in :mod:`seqrl.agents.ppo`.
This module runs the one a run supports, scores it and writes the report.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from seqrl.data import load_meta_dataset, rollout_trajectories
from seqrl.errors import UserError
from seqrl.evaluate import lane_params, lane_rollout

MODES = ("zero-shot", "few-shot")
# every protocol an agent offers (a run supports some: its trainer's ``meta.protocols``)
PROTOCOLS = ("meta-dt", "prompt-dt", "in-context")


def parse_mode(text: str) -> str:
    """``zero-shot`` / ``few-shot`` (no bool parsing: ``False`` is an error, not True)."""
    if text not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {text!r}")
    return text


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

    def random_act(carry, obs, first, key):
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
    run = lambda k: lane_rollout(family, params, k, random_act, observe, (), length)
    _, _, random = jax.jit(run)(key)
    out = {"random": np.asarray(random).reshape(n, episodes).mean(1)}
    if hasattr(family, "oracle_action"):
        # the oracle reads the env state: the lanes act with it
        oracle = lambda k: lane_rollout(
            family, params, k, random_act, observe, (), length, family.oracle_action
        )[2]
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
        # [tasks][seeds]: what seqrl.stats' intervals over tasks x seeds are computed from
        "per_task_seed_return": per_task.T.tolist(),
        "per_task_seed_normalized": norm.T.tolist(),
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
    """Evaluates a trained run on ``split`` under ``mode`` and ``protocol`` (default: the
    run's own); writes ``eval_meta_<mode>_<split>.json`` into the run directory and returns it.

    The normalized score's oracle is the family's oracle policy where it has one, else the best
    episode of each task in ``reference_dataset`` (default: the run's prompt_dataset or
    dataset; an expert dataset is the meaningful choice)."""
    from seqrl.runtime import configure_jax

    _check_arguments(mode, split, protocol)
    configure_jax()
    run, family = _open(Path(run_dir))
    meta = run.trainer.meta
    protocol = meta.protocols[0] if protocol is None else protocol
    if protocol not in meta.protocols:
        raise UserError(
            f"run {run_dir} ({run.config.agent}) has no {protocol} protocol; it has: "
            f"{', '.join(meta.protocols)}"
        )
    key = jax.random.PRNGKey(seed)
    returns = _returns(run, key, split, mode, protocol, rounds)
    conf = run.config
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
        "run_dir": str(run.run_dir),
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
    out = run.run_dir / f"eval_meta_{mode}_{split}.json"
    _report(result, out, log)
    return result


def _check_arguments(mode: str, split: str, protocol: str | None) -> None:
    from seqrl.envs.meta import SPLITS

    parse_mode(mode)
    if split not in SPLITS[:2]:
        raise UserError(f"--split must be train or test, got {split!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def _open(run_dir: Path):
    """The run (with a meta-RL protocol) and its task family."""
    from seqrl.config import resolve_config
    from seqrl.envs import make_raw
    from seqrl.runs import open_run

    conf = resolve_config(None, None, resume=run_dir)
    if not conf.env.startswith("meta/"):
        raise UserError(f"run {run_dir} trained on {conf.env}, not a task family (meta/...)")
    run = open_run(run_dir, conf)
    if run.trainer.meta is None:
        raise UserError(f"run {run_dir} ({conf.agent}) has no meta-RL evaluation")
    family = make_raw(conf.env, **conf.env_kwargs)
    return run, getattr(family, "family", family)  # trials -> the family


def _returns(run, key, split: str, mode: str, protocol: str, rounds: int) -> np.ndarray:
    """``[seeds, tasks, episodes]`` returns of the latest checkpoint under the protocol."""
    from seqrl.loop import map_seeds

    states, _ = run.restore()
    meta = run.trainer.meta
    one = lambda s, k: meta.evaluate(s, k, split, mode, protocol, rounds)["returns"]
    if run.trainer.host_evaluate:  # Meta-World: envs stepped on the host, not jitted
        fn = lambda states, keys: map_seeds(one, states, keys)
    else:
        fn = jax.jit(jax.vmap(one))
    return np.asarray(fn(states, jax.random.split(key, run.config.num_seeds)))


def _report(result: dict, out: Path, log) -> None:
    from seqrl.files import write_json_atomic

    write_json_atomic(out, result)
    log(
        f"{result['agent']} {result['mode']} ({result['protocol']}) on {result['split']} "
        f"tasks: return {result['return_mean']:.2f} +- {result['return_std']:.2f}, normalized "
        f"{result['normalized_mean']:.3f} +- {result['normalized_std']:.3f}"
    )
    for i, (r, s) in enumerate(zip(result["per_task_return"], result["per_task_normalized"])):
        log(f"  task {i}: return {r:8.2f}  normalized {s:6.3f}")
    log(f"results: {out}")


def random_episodes(family, tasks, per_task: int, key: jax.Array):
    """``per_task`` episodes of uniformly random actions in each task of ``tasks`` (task-major),
    as padded ``seqrl.data.Trajectories``: data whose behaviour says nothing about the task, so
    only rewards (and dynamics) can reveal it."""
    space = family.action_space(family.default_params)
    length = family.episode_length

    def act(carry, obs, first, key):
        return carry, jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))

    params = lane_params(family, tasks, per_task)
    _, traj, _ = lane_rollout(family, params, key, act, lambda carry, *_: carry, (), length)
    return rollout_trajectories(traj, length)


__all__ = ["eval_meta", "random_episodes", "reference_returns", "summarize"]
