"""The whole offline meta-RL pipeline on one task family, one command:

    python -m benchmarks.meta_pipeline point-robot   # = make meta-point
    python -m benchmarks.meta_pipeline cheetah-vel   # brax halfcheetah, smaller budgets
    python -m benchmarks.meta_pipeline ml1-reach     # Meta-World ML1 reach (host-side adapter)

1. data sources: one PPO expert per task, all tasks (train + held out) in ONE vmapped run
   (PointRobot, Cheetah-Vel), or Meta-World's scripted policy with action noise (ML1);
2. datasets: the training data (the medium checkpoint's episodes, or, where the family sets
   ``train_noise``, the experts' episodes at several action-noise levels) and expert (Prompt-DT's
   demos, the oracle reference where the family has no oracle policy);
3. offline agents, 3 seeds each (a vmap axis): DT (no task information), Prompt-DT, Meta-DT and
   its three ablations (no context, no prompt, random prompt), and, where the env runs in JAX,
   the online in-context S5-PPO across the training tasks;
4. ``eval-meta`` zero-shot and few-shot on the held-out tasks;
5. a results table (raw and normalized returns) and the claims of the Meta-DT paper (Wang et
   al., "Meta-DT: Offline Meta-RL as Conditional Sequence Modeling with World Model
   Disentanglement", NeurIPS 2024) checked, into docs/results.md and
   docs/benchmarks/meta_<family>.json.

Everything goes under ``--out`` (default runs/meta-<family>); an interrupted pipeline resumes
where it stopped. ``--quick`` shrinks every budget (a smoke test of the pipeline, not a result).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from benchmarks.common import load_average, machine, seqrl_revision, write_report

ORACLE_LABEL = "DT with the true task (control)"
FLOOR_LABEL = "DT (no task information)"
OFFLINE = [  # (label, config, few-shot protocol)
    (FLOOR_LABEL, "dt.yaml", "meta-dt"),
    (ORACLE_LABEL, "dt_task_oracle.yaml", "meta-dt"),
    ("Prompt-DT (expert prompt)", "prompt_dt.yaml", "prompt-dt"),
    ("Meta-DT", "meta_dt.yaml", "meta-dt"),
    ("Meta-DT without context", "meta_dt_no_context.yaml", "meta-dt"),
    ("Meta-DT without prompt", "meta_dt_no_prompt.yaml", "meta-dt"),
    ("Meta-DT with a random prompt", "meta_dt_random_prompt.yaml", "meta-dt"),
]
ONLINE_LABEL = "In-context S5-PPO (online)"
MODES = ("zero-shot", "few-shot")
QUICK_DT = {
    "total_updates": 20,
    "world_model.steps": 20,
    "meta.prompt_warmup": 5,
    "loop.num_chunks": 2,
}


@dataclasses.dataclass(frozen=True)
class Family:
    key: str  # command-line name
    title: str
    configs: Path
    dataset_stem: str  # datasets are <out>/<stem>-{medium|noisy}-v0, <stem>-expert-v0
    command: str
    tasks: str  # "45 training goals, 5 held-out goals"
    oracle: str  # where R_oracle comes from
    scripted_env: str = ""  # collect from this env's scripted policy instead of a PPO run
    online: str = ""  # the in-context S5-PPO config ("" = none, reason in `notes`)
    episodes: int = 100  # episodes per task collected
    # the training data: the medium checkpoint's episodes, or (levels given) the experts'
    # with each task's episodes cycling through these action-noise levels
    train_noise: tuple = ()
    oracle_dt: bool = True  # the task-oracle DT control (needs a JAX task family)
    # the data source: one PPO learner per task, or one goal-conditioned learner over the
    # training tasks that sees the task (env_kwargs.observe_task; collect strips it)
    experts_config: str = "ppo_per_task.yaml"
    tracking: bool = False  # report the experts' mean |v - v_goal| against a random policy's
    eval_rounds: int = 4  # eval-meta rounds of num_envs episodes per held-out task and seed
    quick_ppo: tuple = ()
    quick_online: tuple = ()
    notes: str = ""

    @property
    def heading(self) -> str:
        return f"## Offline meta-RL on {self.title} ({self.command})"

    @property
    def report_json(self) -> Path:
        name = "point" if self.key == "point-robot" else self.key.replace("-", "_")
        return Path(f"docs/benchmarks/meta_{name}.json")  # meta_point.json predates the others


FAMILIES = {
    f.key: f
    for f in (
        Family(
            key="point-robot",
            title="PointRobot",
            configs=Path("configs/meta/point_robot"),
            dataset_stem="point-robot",
            command="make meta-point",
            tasks="45 training goals, 20 held-out goals",
            oracle="the analytic oracle (straight to the goal)",
            online="ppo_s5_incontext.yaml",
            episodes=30,
            train_noise=(0.0, 0.5, 1.0),
            quick_ppo=(("total_timesteps", 6400), ("loop.num_chunks", 4)),
            quick_online=(("total_timesteps", 25600), ("loop.num_chunks", 2)),
        ),
        Family(
            key="cheetah-vel",
            title="Cheetah-Vel",
            configs=Path("configs/meta/cheetah_vel"),
            dataset_stem="cheetah-vel",
            command="make meta-cheetah-vel",
            tasks="15 training goal velocities, 10 held-out ones (brax halfcheetah, spring "
            "backend, T = 200)",
            oracle="the best expert episode of each goal (the goal-conditioned PPO expert)",
            episodes=20,
            train_noise=(0.0, 0.3, 0.6),
            experts_config="ppo_goal.yaml",
            tracking=True,
            eval_rounds=1,
            quick_ppo=(("total_timesteps", 4096), ("loop.num_chunks", 2)),
            notes="Data: ONE PPO learner over the 15 training velocities with the goal velocity "
            "appended to its observations (`env_kwargs.observe_task`), run on every goal "
            "(training and held-out); `seqrl collect` records the observations without the goal, "
            "so no offline agent sees it. Budgets are far below the paper's (35 + 5 goals, one "
            "SAC per task for ~1e6 steps, 100 episodes per task, 100k+ DT updates). No "
            "in-context S5-PPO row: S5 on brax bodies across the training tasks is beyond this "
            "CPU's hour.",
        ),
        Family(
            key="ml1-reach",
            title="Meta-World ML1 reach",
            configs=Path("configs/meta/ml1_reach"),
            dataset_stem="ml1-reach",
            command="make meta-ml1-reach",
            tasks="15 training goals, 5 held-out goals (metaworld.ML1('reach-v3', seed=0); "
            "the goal is hidden; episodes cut to 200 steps)",
            oracle="Meta-World's scripted policy shown the goal (SawyerReachV3Policy)",
            scripted_env="meta/ML1-reach",
            episodes=20,
            oracle_dt=False,
            notes="Data: the scripted policy with Gaussian action noise, std 1.0 (medium) and "
            "0.1 (expert). Meta-World steps on the host, so the agents train on device and "
            "are evaluated through the host-side adapter (policy jitted, MuJoCo stepped from "
            "Python). No in-context S5-PPO row: online PPO needs an env inside the jitted "
            "loop.",
        ),
    )
}


def render(family: str = "point-robot") -> None:
    """Rewrites the docs/results.md section from the saved report (no rerun)."""
    import json

    from benchmarks.common import replace_section

    fam = FAMILIES[family]
    report = json.loads(fam.report_json.read_text())
    replace_section(Path("docs/results.md"), fam.heading, _markdown(fam, report))


class Steps:
    """Runs the pipeline's named steps, timing each (``timings``: name -> seconds) and printing
    the time it took."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn):
        t = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t, 1)
        print(f"[meta-{self.family}] {name}: {self.timings[name]} s", flush=True)
        return result


def train(config: Path, run_dir: Path, **overrides):
    """Trains into ``run_dir``, or finishes a run an interrupted pipeline left there."""
    import seqrl

    if (run_dir / "summary.json").exists():
        return None
    if (run_dir / "checkpoints").exists():
        return seqrl.train(None, resume=run_dir, progress=False)
    return seqrl.train(str(config), run_dir=run_dir, progress=False, **overrides)


def collect_data(fam: Family, out: Path, episodes: int, step: Steps, quick_ppo: dict):
    """1. data sources, 2. data: the training and expert datasets under ``out`` (from the
    family's scripted policy, or from one PPO run over all tasks), made where missing. The
    training data is the medium checkpoint's, or with ``fam.train_noise`` the experts' with
    action noise (exploratory data); every episode starts with the configs' ``meta.opening``
    (a scripted probe the agents repeat at evaluation), where they set one."""
    from seqrl.api import resolve_config
    from seqrl.collection import collect, collect_scripted

    noisy = bool(fam.train_noise)
    train_data = out / f"{fam.dataset_stem}-{'noisy' if noisy else 'medium'}-v0"
    expert = out / f"{fam.dataset_stem}-expert-v0"
    agent_config = resolve_config(str(fam.configs / "meta_dt.yaml"))
    opening = [list(a) for a in agent_config.meta.opening] or None
    if fam.scripted_env:
        env_kwargs = dict(agent_config.env_kwargs)
        for quality, path in (("medium", train_data), ("expert", expert)):
            if not path.exists():
                step(
                    f"collect {quality} (scripted)",
                    lambda q=quality, p=path: collect_scripted(
                        fam.scripted_env, episodes, p, quality=q, env_kwargs=env_kwargs
                    ),
                )
        return train_data, expert
    experts = out / "ppo-experts"
    if not (experts / "summary.json").exists():
        step(
            "PPO experts (one run)",
            lambda: train(fam.configs / fam.experts_config, experts, **quick_ppo),
        )
    parts = (
        ("noisy" if noisy else "medium", train_data, "expert" if noisy else "medium"),
        ("expert", expert, "expert"),
    )
    for name, path, quality in parts:
        noise = fam.train_noise if name == "noisy" else 0.0
        if not path.exists():
            step(
                f"collect {name}",
                lambda q=quality, p=path, n=noise: collect(
                    experts, episodes, p, quality=q, noise=n, opening=opening
                ),
            )
    return train_data, expert


def agent_rows(fam: Family, out: Path, medium: Path, expert: Path, step: Steps, quick: bool):
    """3. agents, 4. evaluation: trains each offline agent (and the online one, where the
    family has it) where missing, and evaluates it zero-shot and few-shot; a row per agent."""
    from seqrl.meta_eval import eval_meta

    quick_dt = QUICK_DT if quick else {}
    rows = []
    for label, name, protocol in OFFLINE:
        if label == ORACLE_LABEL and not fam.oracle_dt:
            continue
        run_dir = out / name.removesuffix(".yaml")
        if not (run_dir / "summary.json").exists():
            step(
                f"train {label}",
                lambda n=name, r=run_dir: train(
                    fam.configs / n,
                    r,
                    dataset=str(medium),
                    prompt_dataset=str(expert),
                    **quick_dt,
                ),
            )
        rows.append(
            _evaluate(
                label, run_dir, protocol, eval_meta, step, quick=quick, rounds=fam.eval_rounds
            )
        )
    if fam.online:
        run_dir = out / fam.online.removesuffix(".yaml")
        quick_online = dict(fam.quick_online) if quick else {}
        if not (run_dir / "summary.json").exists():
            step(
                f"train {ONLINE_LABEL}",
                lambda: train(fam.configs / fam.online, run_dir, **quick_online),
            )
        rows.append(
            _evaluate(
                ONLINE_LABEL,
                run_dir,
                "in-context",
                eval_meta,
                step,
                reference=str(expert),
                quick=quick,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(FAMILIES), help="task family")
    parser.add_argument("--out", type=Path, default=None, help="default runs/meta-<family>")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per task collected")
    args = parser.parse_args(argv)
    fam = FAMILIES[args.family]
    # seqrl's modules are imported off the pipeline's clock; the phases take them from the cache
    import seqrl.collection  # noqa: F401
    import seqrl.meta_eval  # noqa: F401

    t0 = time.perf_counter()
    out = args.out or Path(f"runs/meta-{fam.key}")
    out.mkdir(parents=True, exist_ok=True)
    step = Steps(fam.key)
    quick_ppo = dict(fam.quick_ppo) if args.quick else {}
    episodes = 2 if args.quick else (args.episodes or fam.episodes)
    medium, expert = collect_data(fam, out, episodes, step, quick_ppo)
    rows = agent_rows(fam, out, medium, expert, step, args.quick)

    total = time.perf_counter() - t0
    report = {
        "budgets": budgets(out, episodes),
        "command": fam.command + (" (--quick)" if args.quick else ""),
        "machine": machine(),
        "load_average": load_average(),
        "seqrl_revision": seqrl_revision(),
        "episodes_per_task": episodes,
        "wall_seconds": round(total, 1),
        "step_seconds": step.timings,
        "rows": rows,
        "statistics": statistics(rows),
        "probe_ceiling": probe_ceiling(out),
    }
    if not fam.scripted_env:  # the probe's closed loop runs on device (not Meta-World's host)
        report["z_probe"] = step("z probe", lambda: z_probe(out, medium))
    # the figures beside the JSON (a --quick run's in its --out folder)
    report["figures"] = figures(fam, report, out if args.quick else fam.report_json.parent)
    if fam.tracking and not args.quick:
        report["tracking"] = step("velocity tracking", lambda: velocity_tracking(out, expert))
    if not args.quick:
        report["reused_seconds"] = reused_steps(fam.report_json, step.timings)
    section = _markdown(fam, report)
    print(section)
    if not args.quick:
        write_report(Path("docs/results.md"), fam.report_json, fam.heading, report, section)
    return 0


def reused_steps(previous: Path, timings: dict) -> dict:
    """The steps this run skipped because an earlier run under the same ``--out`` had saved
    their outputs (data, trained agents), with the seconds they took then (read from the
    previous report, and its own reused steps): the end-to-end time is this run's wall time
    plus these."""
    if not previous.is_file():
        return {}
    before = json.loads(previous.read_text())
    earlier = {**before.get("reused_seconds", {}), **before.get("step_seconds", {})}
    return {k: v for k, v in earlier.items() if k not in timings}


def budgets(out: Path, episodes: int) -> dict:
    """What the pipeline under ``out`` actually ran, read from its runs' saved configs (so the
    docs never state a budget the run did not use)."""
    import yaml

    def config(name: str) -> dict:
        path = out / name / "config.yaml"
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    meta, experts = config("meta_dt"), config("ppo-experts")
    from seqrl.envs import make_raw

    family = make_raw(meta["env"], **meta.get("env_kwargs", {}))
    return {
        "num_train": family.num_train,
        "num_test": family.num_test,
        "episode_length": family.episode_length,
        "ppo_env_steps_per_task": experts.get("total_timesteps"),
        "ppo_goal_conditioned": bool(experts.get("env_kwargs", {}).get("observe_task")),
        "episodes_per_task": episodes,
        "dt_updates": meta["total_updates"],
        "world_model_steps": meta["world_model"]["steps"],
        "opening": meta.get("meta", {}).get("opening", []),
        "dt_size": {k: meta["dt"].get(k) for k in ("embed_dim", "num_layers", "context")},
    }


def probe_ceiling(out: Path) -> dict | None:
    """The normalized score, per held-out task, of the family's oracle policy that first plays
    the configs' scripted probe (``meta.opening``): the ceiling of any agent that runs the probe
    (PointRobot-like families: an ``oracle_action`` and a ``time`` step counter in the env
    state). None where the run has no probe or the family no oracle policy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from seqrl.config import load_config
    from seqrl.envs import make_raw
    from seqrl.evaluate import lane_params, lane_rollout

    config = load_config(out / "meta_dt" / "config.yaml")
    if not config.meta.opening:
        return None
    family = make_raw(config.env, **config.env_kwargs)
    if not hasattr(family, "oracle_action"):
        return None
    probe = jnp.asarray(config.meta.opening, jnp.float32)

    def act_from_state(state):
        scripted = probe[jnp.minimum(state.time, len(probe) - 1)]
        return jnp.where(state.time < len(probe), scripted, family.oracle_action(state))

    params = lane_params(family, family.split("test"), 1)
    returns = lane_rollout(
        family,
        params,
        jax.random.PRNGKey(0),
        lambda c, o, f, k: (c, o),
        lambda c, *_: c,
        (),
        family.episode_length,
        act_from_state,
    )[2]
    ref = json.loads((out / "meta_dt" / "eval_meta_zero-shot_test.json").read_text())
    rnd, oracle = np.asarray(ref["random_return"]), np.asarray(ref["oracle_return"])
    per_task = (np.asarray(returns) - rnd) / (oracle - rnd)
    return {"per_task_normalized": per_task.tolist(), "normalized_mean": float(per_task.mean())}


def z_probe(out: Path, data: Path) -> dict:
    """A linear probe from Meta-DT's z (seed 0) to the true task, fitted on the training
    tasks' data (steps t >= h) and read on the held-out tasks: on their data's contexts and
    on the agent's own closed-loop episodes (``benchmarks.meta_controls``)."""
    from benchmarks.meta_controls import _z_probe

    return _z_probe(out, str(data))


FIGURE_AGENTS = (  # (label, mode) of the per-task bars
    (FLOOR_LABEL, "zero-shot"),
    (ORACLE_LABEL, "zero-shot"),
    ("Prompt-DT (expert prompt)", "few-shot"),
    ("Meta-DT", "zero-shot"),
    ("Meta-DT", "few-shot"),
)


def figures(fam: Family, report: dict, folder: Path) -> dict[str, str]:
    """``folder``/meta_<family>_tasks.png (each held-out task's normalized score per agent,
    mean over seeds with its 95% bootstrap interval over seeds) and ..._z_probe.png (the
    probe's reading of each held-out task against the truth); ``{caption: path}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from seqrl import stats

    stem = folder / fam.report_json.stem
    by = {r["agent"]: r for r in report["rows"]}
    shown = [(a, m) for a, m in FIGURE_AGENTS if a in by]
    tasks = len(by[FLOOR_LABEL]["zero-shot"]["per_task_seed_normalized"])
    fig, ax = plt.subplots(figsize=(max(8, tasks * 0.6), 4))
    width = 0.8 / len(shown)
    for i, (agent, mode) in enumerate(shown):
        cells = _cells(by[agent], mode)
        ci = [stats.interval(cells[t : t + 1]) for t in range(tasks)]
        mid = np.array([c["estimate"] for c in ci])
        err = np.array([[c["estimate"] - c["low"], c["high"] - c["estimate"]] for c in ci]).T
        x = np.arange(tasks) + (i - (len(shown) - 1) / 2) * width
        ax.bar(x, mid, width, yerr=err, capsize=2, label=f"{agent}, {mode}")
    ax.set(xlabel="held-out task", ylabel="normalized score", xticks=range(tasks))
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize="x-small", ncol=2)
    ax.set_title(f"{fam.title}: per held-out task (mean over seeds, 95% interval)")
    out = {"Per held-out task": _save(fig, f"{stem}_tasks.png")}
    if "z_probe" not in report:
        return out
    probe = report["z_probe"]
    dims = len(probe["heldout_data_contexts"]["true"][0])
    fig, axes = plt.subplots(1, dims, figsize=(max(7, 4.2 * dims), 4.2), squeeze=False)
    for d, ax in enumerate(axes[0]):
        for key, label in (
            ("heldout_data_contexts", "data's contexts"),
            ("heldout_closed_loop", "the agent's own episodes"),
        ):
            true = np.asarray(probe[key]["true"])[:, d]
            ax.scatter(
                true,
                np.asarray(probe[key]["predicted"])[:, d],
                s=4,
                alpha=0.4,
                label=f"{label}, R^2 {probe['r2_' + key]:.2f}",
            )
        lims = ax.get_xlim()
        ax.plot(lims, lims, "k--", lw=0.8)
        ax.set(xlabel=f"true task[{d}]", ylabel="read from z")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{fam.title}: held-out tasks read from Meta-DT's z\n(linear probe, t >= h)")
    out["The z probe"] = _save(fig, f"{stem}_z_probe.png")
    return out


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    path = Path(path).resolve()
    docs = Path("docs").resolve()
    return str(path.relative_to(docs) if path.is_relative_to(docs) else path)  # results.md's link


def velocity_tracking(out: Path, expert: Path) -> dict:
    """The data source's speed tracking on Cheetah-Vel, per task (training then held-out): its
    mean |v - v_goal| per step, read from the expert dataset (noise 0) through the reward
    ``r = -|v - v_goal| - c ||a||^2``, so ``|v - v_goal| = -(r + c ||a||^2)``; against a
    uniformly random policy's (4 episodes per task, on device). The data depends on the task
    when the experts' error is a small fraction of the random policy's."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import yaml

    from seqrl.data import load_dataset
    from seqrl.envs import make_raw
    from seqrl.envs.meta.locomotion import CONTROL_COST

    traj, meta = load_dataset(str(expert))
    rewards, actions = np.asarray(traj.rewards), np.asarray(traj.actions)
    valid = np.arange(rewards.shape[1])[None] < np.asarray(traj.lengths)[:, None]
    error = -(rewards + CONTROL_COST * np.square(actions).sum(-1))
    tasks = np.asarray(meta.info["episode_tasks"])
    config = yaml.safe_load((out / "meta_dt" / "config.yaml").read_text())
    family = make_raw(config["env"], **config.get("env_kwargs", {}))
    n = family.num_train + family.num_test
    experts = [float(error[tasks == i][valid[tasks == i]].mean()) for i in range(n)]

    def random_error(params, key):
        def step(state, k):
            action = jax.random.uniform(k, (6,), minval=-1.0, maxval=1.0)
            _, state, r, *_ = family.step(k, state, action, params)
            return state, -(r + CONTROL_COST * jnp.sum(action**2))

        def episode(k):
            state = family.reset(k, params)[1]
            return jax.lax.scan(step, state, jax.random.split(k, family.episode_length))[1].mean()

        return jax.vmap(episode)(jax.random.split(key, 4)).mean()

    params = family.single_task_params(family.split("all"))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    random = np.asarray(jax.jit(jax.vmap(random_error))(params, keys)).tolist()
    ratio = float(np.mean(experts) / np.mean(random))
    return {
        "goals": np.asarray(family.split("all")).tolist(),
        "num_train": family.num_train,
        "expert_error": experts,
        "random_error": random,
        "ratio": ratio,
    }


def _tracking_line(t: dict) -> str:
    k = t["num_train"]
    mean = lambda x, s: sum(x[s]) / len(x[s])
    train, test = slice(0, k), slice(k, None)
    return (
        "Data: the experts' mean |v - v_goal| per step (from the expert dataset's rewards) is "
        f"{mean(t['expert_error'], train):.3f} on the training velocities and "
        f"{mean(t['expert_error'], test):.3f} on the held-out ones, against "
        f"{mean(t['random_error'], train):.3f} and {mean(t['random_error'], test):.3f} for "
        f"uniformly random actions: **{t['ratio']:.2f}** of the random policy's error (the "
        "target: at most 0.25)."
    )


def _budget_line(b: dict) -> str:
    data = (
        f"one goal-conditioned PPO learner over the training tasks, "
        f"{b['ppo_env_steps_per_task']:,} env steps in all"
        if b.get("ppo_goal_conditioned")
        else f"one PPO learner per task for {b['ppo_env_steps_per_task']:,} env steps"
        if b.get("ppo_env_steps_per_task")
        else "scripted policies"
    )
    size = b.get("dt_size")
    model = (
        f" of a {size['num_layers']}-layer, {size['embed_dim']}-wide DT over {size['context']} "
        "steps"
        if size
        else ""
    )
    probe = (
        f" Every episode of the data opens with the scripted probe {b['opening']} "
        "(`meta.opening`), which every offline agent repeats at evaluation before it acts."
        if b.get("opening")
        else ""
    )
    return (
        f"This run's budgets (from its saved configs): {b['num_train']} training + "
        f"{b['num_test']} held-out tasks, T = {b['episode_length']}; data from {data}, "
        f"{b['episodes_per_task']} episodes per task per dataset; {b['dt_updates']:,} updates"
        f"{model} per offline agent (world model: {b['world_model_steps']:,} steps).{probe}"
    )


def _evaluate(label, run_dir, protocol, eval_meta, step, reference=None, quick=False, rounds=4):
    row = {"agent": label, "run_dir": str(run_dir)}
    for mode in ("zero-shot", "few-shot"):
        r = step(
            f"eval-meta {label} {mode}",
            lambda m=mode: eval_meta(
                run_dir,
                m,
                protocol=protocol,
                rounds=1 if quick else rounds,
                reference_dataset=reference,
                log=lambda _: None,
            ),
        )
        row[mode] = {
            k: r[k]
            for k in (
                "return_mean",
                "return_std",
                "normalized_mean",
                "normalized_std",
                "per_task_return",
                "per_task_seed_return",
                "per_task_seed_normalized",
                "seeds",
                "episodes_per_task",
            )
        }
        row["oracle_return"], row["random_return"] = r["oracle_return"], r["random_return"]
    return row


def _cells(row: dict, mode: str):
    import numpy as np

    return np.asarray(row[mode]["per_task_seed_normalized"], np.float64)


def _pair(a, b):
    """Two agents' [tasks, seeds] scores on their common seeds (an online agent may have
    fewer or more seeds than the offline ones; the tasks are the same)."""
    n = min(a.shape[1], b.shape[1])
    return a[:, :n], b[:, :n]


COMPARISONS = (  # (claim, agent, mode, other agent, other's mode)
    ("Meta-DT zero-shot beats DT", "Meta-DT", "zero-shot", FLOOR_LABEL, "zero-shot"),
    ("Meta-DT few-shot beats DT", "Meta-DT", "few-shot", FLOOR_LABEL, "zero-shot"),
    ("the task-oracle DT beats DT", ORACLE_LABEL, "zero-shot", FLOOR_LABEL, "zero-shot"),
    ("Meta-DT few-shot beats its zero-shot", "Meta-DT", "few-shot", "Meta-DT", "zero-shot"),
    (
        "Meta-DT zero-shot beats Prompt-DT (expert prompt)",
        "Meta-DT",
        "zero-shot",
        "Prompt-DT (expert prompt)",
        "few-shot",
    ),
    (
        "Meta-DT few-shot beats Prompt-DT (expert prompt)",
        "Meta-DT",
        "few-shot",
        "Prompt-DT (expert prompt)",
        "few-shot",
    ),
    (
        "Meta-DT zero-shot beats in-context S5-PPO",
        "Meta-DT",
        "zero-shot",
        ONLINE_LABEL,
        "zero-shot",
    ),
    ("Meta-DT few-shot beats in-context S5-PPO", "Meta-DT", "few-shot", ONLINE_LABEL, "few-shot"),
    *(
        (f"Meta-DT beats {name.removeprefix('Meta-DT ')} ({mode})", "Meta-DT", mode, name, mode)
        for name in (
            "Meta-DT without context",
            "Meta-DT without prompt",
            "Meta-DT with a random prompt",
        )
        for mode in ("zero-shot", "few-shot")
    ),
)


def statistics(rows: list[dict]) -> dict:
    """Every agent's normalized score with its 95% stratified bootstrap interval over tasks x
    seeds, the paired comparisons (a claim holds only when its interval excludes 0) and the
    share of the DT-to-oracle gap each agent closes (:mod:`seqrl.stats`)."""
    import numpy as np

    from seqrl import stats

    by = {r["agent"]: r for r in rows}
    out = {"normalized": {}, "comparisons": [], "gap_closed": {}}
    for r in rows:
        out["normalized"][r["agent"]] = {m: stats.interval(_cells(r, m)) for m in MODES}
    for claim, a, mode_a, b, mode_b in COMPARISONS:
        if a in by and b in by:
            diff = stats.paired_difference(*_pair(_cells(by[a], mode_a), _cells(by[b], mode_b)))
            out["comparisons"].append({"claim": claim, **diff})
    if ORACLE_LABEL in by:
        floor, oracle = _cells(by[FLOOR_LABEL], "zero-shot"), _cells(by[ORACLE_LABEL], "zero-shot")
        for r in rows:
            for m in MODES:
                agent, f = _pair(_cells(r, m), floor)
                gap = np.nan_to_num(stats.gap_closed(agent, f, _pair(oracle, f)[0]))
                out["gap_closed"].setdefault(r["agent"], {})[m] = stats.interval(gap)
    return out


def _ci(x: dict) -> str:
    return f"{x['estimate']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"


def _claims(st: dict) -> list[str]:
    return [f"- {c['claim']}: difference {_ci(c)}: **{c['verdict']}**" for c in st["comparisons"]]


def _table(rows: list[dict], st: dict) -> list[str]:
    gap = st["gap_closed"]
    lines = [
        "| agent | seeds | zero-shot return | zero-shot normalized [95% CI] | few-shot return "
        "| few-shot normalized [95% CI] | gap closed, zero-shot / few-shot |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        z, f, n = r["zero-shot"], r["few-shot"], st["normalized"][r["agent"]]
        g = gap.get(r["agent"])
        closed = f"{g['zero-shot']['estimate']:.0%} / {g['few-shot']['estimate']:.0%}" if g else "-"
        lines.append(
            f"| {r['agent']} | {z['seeds']} | {z['return_mean']:.2f} +- {z['return_std']:.2f} | "
            f"{_ci(n['zero-shot'])} | {f['return_mean']:.2f} +- {f['return_std']:.2f} | "
            f"{_ci(n['few-shot'])} | {closed} |"
        )
    return lines


def _wall(report: dict) -> str:
    """The run's wall time, and what a resumed run reused from an earlier one."""
    reused = report.get("reused_seconds") or {}
    if not reused:
        return f"{report['wall_seconds'] / 60:.1f} min end to end"
    return (
        f"{report['wall_seconds'] / 60:.1f} min; it reused the saved outputs of "
        f"{len(reused)} steps of an earlier run ({', '.join(reused)}), which took "
        f"{sum(reused.values()) / 60:.1f} min then"
    )


def _markdown(fam: Family, report: dict) -> str:
    rows = report["rows"]
    st = report.get("statistics") or statistics(rows)
    data = (
        f"expert episodes with action noise cycling through {list(fam.train_noise)} per task"
        if fam.train_noise
        else "medium episodes"
    )
    wall = _wall(report)
    lines = [
        fam.heading,
        "",
        f"Command: `{report['command']}` ({wall}, "
        f"seqrl {report['seqrl_revision']}, {report['machine'].get('nproc', '?')} CPUs, load "
        f"{report['load_average'][0]:.1f}). {fam.tasks[0].upper() + fam.tasks[1:]}; training "
        f"data: {report['episodes_per_task']} {data}. Seeds per agent in the table (the "
        "offline agents train theirs side by side in one vmapped run). Normalized score "
        "(R - R_random) / (R_oracle - R_random) per held-out task and seed (R_oracle from "
        f"{fam.oracle}), its mean over tasks x seeds with a 95% stratified bootstrap interval "
        "(seqrl.stats: seeds resampled within each task); returns are mean +- std. Gap closed "
        "= (agent - DT) / (task-oracle DT - DT). Per-task, per-seed numbers: "
        f"{fam.report_json}.",
    ]
    if "budgets" in report:
        lines += ["", _budget_line(report["budgets"])]
    if fam.notes:
        lines += ["", fam.notes]
    if report.get("tracking"):
        lines += ["", _tracking_line(report["tracking"])]
    if report.get("z_probe"):
        p = report["z_probe"]
        lines += [
            "",
            "The z probe (a linear map from Meta-DT's z to the true task, seed 0, fitted on the "
            "training tasks' data at steps t >= h): R^2 on the held-out tasks "
            f"{p['r2_heldout_data_contexts']:.2f} on their data's contexts, "
            f"{p['r2_heldout_closed_loop']:.2f} on the agent's own zero-shot episodes "
            f"({p['r2_train_fit']:.2f} on the training data it was fitted on).",
        ]
    lines += ["", *_table(rows, st)]
    oracle, rnd = rows[0]["oracle_return"], rows[0]["random_return"]
    online = any(r["agent"] == ONLINE_LABEL for r in rows)
    lines += [
        "",
        "Held-out tasks' reference returns (mean over tasks): oracle "
        f"{sum(oracle) / len(oracle):.2f}, random {sum(rnd) / len(rnd):.2f}."
        + (
            " The oracle policy after the probe (the ceiling of any agent that runs it): "
            f"normalized {report['probe_ceiling']['normalized_mean']:.3f}."
            if report.get("probe_ceiling")
            else ""
        ),
        "",
        "Protocols: zero-shot = no demonstrations (Meta-DT: the online context only; Prompt-DT "
        "and DT: no prompt"
        + ("; S5-PPO: the first episode of a trial" if online else "")
        + "); few-shot = Meta-DT prompts itself with the highest-error segment of a zero-shot "
        "episode of the task, Prompt-DT gets the last 5 steps of an expert demo of the task "
        "(privileged)" + (", S5-PPO the second episode of a trial." if online else "."),
        "",
        "Claims, each a paired difference over tasks x seeds with its 95% interval (holds: "
        "above 0; reversed: below 0; otherwise inconclusive):",
        "",
        *_claims(st),
    ]
    if report.get("figures"):
        lines += ["", *(f"![{name}]({path})" for name, path in report["figures"].items())]
    lines += [
        "",
        "Step timings (s): "
        + ", ".join(f"{k} {v}" for k, v in report["step_seconds"].items())
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
