"""The whole offline meta-RL pipeline on one task family, one command:

    python -m benchmarks.meta_pipeline point-robot   # = make meta-point
    python -m benchmarks.meta_pipeline cheetah-vel   # brax halfcheetah, smaller budgets
    python -m benchmarks.meta_pipeline ml1-reach     # Meta-World ML1 reach (host-side adapter)

1. data sources: one PPO expert per task, all tasks (train + held out) in ONE vmapped run
   (PointRobot, Cheetah-Vel), or Meta-World's scripted policy with action noise (ML1);
2. datasets: medium (training data) and expert (Prompt-DT's demos, the oracle reference where
   the family has no oracle policy);
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
import time
from pathlib import Path

from benchmarks.common import load_average, machine, seqrl_revision, write_report

OFFLINE = [  # (label, config, few-shot protocol)
    ("DT (no task information)", "dt.yaml", "meta-dt"),
    ("Prompt-DT (expert prompt)", "prompt_dt.yaml", "prompt-dt"),
    ("Meta-DT", "meta_dt.yaml", "meta-dt"),
    ("Meta-DT without context", "meta_dt_no_context.yaml", "meta-dt"),
    ("Meta-DT without prompt", "meta_dt_no_prompt.yaml", "meta-dt"),
    ("Meta-DT with a random prompt", "meta_dt_random_prompt.yaml", "meta-dt"),
]
ONLINE_LABEL = "In-context S5-PPO (online)"
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
    dataset_stem: str  # datasets are <out>/<stem>-medium-v0, <stem>-expert-v0
    command: str
    tasks: str  # "45 training goals, 5 held-out goals"
    oracle: str  # where R_oracle comes from
    scripted_env: str = ""  # collect from this env's scripted policy instead of a PPO run
    online: str = ""  # the in-context S5-PPO config ("" = none, reason in `notes`)
    episodes: int = 100  # episodes per task collected
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
            tasks="45 training goals, 5 held-out goals",
            oracle="the analytic oracle (straight to the goal)",
            online="ppo_s5_incontext.yaml",
            quick_ppo=(("total_timesteps", 6400), ("loop.num_chunks", 4)),
            quick_online=(("total_timesteps", 25600), ("loop.num_chunks", 2)),
        ),
        Family(
            key="cheetah-vel",
            title="Cheetah-Vel",
            configs=Path("configs/meta/cheetah_vel"),
            dataset_stem="cheetah-vel",
            command="make meta-cheetah-vel",
            tasks="15 training goal velocities, 5 held-out ones (brax halfcheetah, spring "
            "backend, T = 200)",
            oracle="the best expert episode of each goal (its per-task PPO expert)",
            episodes=20,
            quick_ppo=(("total_timesteps", 4000), ("loop.num_chunks", 2)),
            notes="Budgets are far below the paper's (35 + 5 goals, one SAC per task for "
            "~1e6 steps, 100 episodes per task, 100k+ DT updates). No in-context S5-PPO row: "
            "S5 on brax bodies across the training tasks is beyond this CPU's hour.",
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
    """1. data sources, 2. data: the medium and expert datasets under ``out`` (from the
    family's scripted policy, or from one PPO run over all tasks), made where missing."""
    from seqrl.collection import collect, collect_scripted

    medium = out / f"{fam.dataset_stem}-medium-v0"
    expert = out / f"{fam.dataset_stem}-expert-v0"
    if fam.scripted_env:
        from seqrl.api import resolve_config

        env_kwargs = dict(resolve_config(str(fam.configs / "meta_dt.yaml")).env_kwargs)
        for quality, path in (("medium", medium), ("expert", expert)):
            if not path.exists():
                step(
                    f"collect {quality} (scripted)",
                    lambda q=quality, p=path: collect_scripted(
                        fam.scripted_env, episodes, p, quality=q, env_kwargs=env_kwargs
                    ),
                )
    else:
        experts = out / "ppo-experts"
        if not (experts / "summary.json").exists():
            step(
                "per-task PPO (all tasks, one run)",
                lambda: train(fam.configs / "ppo_per_task.yaml", experts, **quick_ppo),
            )
        for quality, path in (("medium", medium), ("expert", expert)):
            if not path.exists():
                step(
                    f"collect {quality}",
                    lambda q=quality, p=path: collect(experts, episodes, p, quality=q),
                )
    return medium, expert


def agent_rows(fam: Family, out: Path, medium: Path, expert: Path, step: Steps, quick: bool):
    """3. agents, 4. evaluation: trains each offline agent (and the online one, where the
    family has it) where missing, and evaluates it zero-shot and few-shot; a row per agent."""
    from seqrl.meta_eval import eval_meta

    quick_dt = QUICK_DT if quick else {}
    rows = []
    for label, name, protocol in OFFLINE:
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
        rows.append(_evaluate(label, run_dir, protocol, eval_meta, step, quick=quick))
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
                "meta-dt",
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
    }
    section = _markdown(fam, report)
    print(section)
    if not args.quick:
        write_report(Path("docs/results.md"), fam.report_json, fam.heading, report, section)
    return 0


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
        "episodes_per_task": episodes,
        "dt_updates": meta["total_updates"],
        "world_model_steps": meta["world_model"]["steps"],
    }


def _budget_line(b: dict) -> str:
    data = (
        f"one PPO learner per task for {b['ppo_env_steps_per_task']:,} env steps"
        if b.get("ppo_env_steps_per_task")
        else "scripted policies"
    )
    return (
        f"This run's budgets (from its saved configs): {b['num_train']} training + "
        f"{b['num_test']} held-out tasks, T = {b['episode_length']}; data from {data}, "
        f"{b['episodes_per_task']} episodes per task per dataset; {b['dt_updates']:,} updates per "
        f"offline agent (world model: {b['world_model_steps']:,} steps)."
    )


def _evaluate(label, run_dir, protocol, eval_meta, step, reference=None, quick=False) -> dict:
    row = {"agent": label, "run_dir": str(run_dir)}
    for mode in ("zero-shot", "few-shot"):
        r = step(
            f"eval-meta {label} {mode}",
            lambda m=mode: eval_meta(
                run_dir,
                m,
                protocol=protocol,
                rounds=1 if quick else 4,
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
                "seeds",
                "episodes_per_task",
            )
        }
        row["oracle_return"], row["random_return"] = r["oracle_return"], r["random_return"]
    return row


def _claims(rows: list[dict]) -> list[str]:
    by = {r["agent"]: r for r in rows}
    score = lambda name, mode: by[name][mode]["normalized_mean"]
    meta = "Meta-DT"
    lines = []

    def claim(text, holds):
        lines.append(f"- {text}: **{'holds' if holds else 'does not hold'}**")

    for mode in ("zero-shot", "few-shot"):
        claim(
            f"Meta-DT ({mode}) beats DT",
            score(meta, mode) > score("DT (no task information)", "few-shot"),
        )
        claim(
            f"Meta-DT ({mode}) beats Prompt-DT with expert prompts",
            score(meta, mode) > score("Prompt-DT (expert prompt)", "few-shot"),
        )
    drop = score(meta, "few-shot") - score(meta, "zero-shot")
    claim(
        f"Meta-DT loses little without demonstrations: zero-shot at most 0.1 below few-shot "
        f"(few-shot {score(meta, 'few-shot'):.3f}, zero-shot {score(meta, 'zero-shot'):.3f})",
        drop < 0.1,
    )
    for ablation in (
        "Meta-DT without context",
        "Meta-DT without prompt",
        "Meta-DT with a random prompt",
    ):
        claim(
            f"{ablation} is worse (few-shot)", score(ablation, "few-shot") < score(meta, "few-shot")
        )
    return lines


def _markdown(fam: Family, report: dict) -> str:
    rows = report["rows"]
    lines = [
        fam.heading,
        "",
        f"Command: `{report['command']}` ({report['wall_seconds'] / 60:.1f} min end to end, "
        f"seqrl {report['seqrl_revision']}, {report['machine'].get('nproc', '?')} CPUs, load "
        f"{report['load_average'][0]:.1f}). {fam.tasks[0].upper() + fam.tasks[1:]}, "
        f"{report['episodes_per_task']} medium episodes per task; seeds per agent in the table "
        "(the offline agents train theirs side by side in one vmapped run); each cell is the "
        "mean +- std over seeds x held-out tasks of the per-task mean return of deterministic "
        "episodes. Normalized score (R - R_random) / (R_oracle - R_random) per task, R_oracle "
        f"from {fam.oracle}.",
    ]
    if "budgets" in report:
        lines += ["", _budget_line(report["budgets"])]
    if fam.notes:
        lines += ["", fam.notes]
    lines += [
        "",
        "| agent | seeds | zero-shot return | zero-shot normalized | few-shot return "
        "| few-shot normalized |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        z, f = r["zero-shot"], r["few-shot"]
        lines.append(
            f"| {r['agent']} | {z['seeds']} | {z['return_mean']:.2f} +- {z['return_std']:.2f} | "
            f"{z['normalized_mean']:.3f} +- {z['normalized_std']:.3f} | "
            f"{f['return_mean']:.2f} +- {f['return_std']:.2f} | "
            f"{f['normalized_mean']:.3f} +- {f['normalized_std']:.3f} |"
        )
    oracle = rows[0]["oracle_return"]
    rnd = rows[0]["random_return"]
    online = any(r["agent"] == ONLINE_LABEL for r in rows)
    lines += [
        "",
        "Held-out tasks' reference returns: oracle "
        + ", ".join(f"{x:.2f}" for x in oracle)
        + "; random "
        + ", ".join(f"{x:.2f}" for x in rnd)
        + ".",
        "",
        "Protocols: zero-shot = no demonstrations (Meta-DT: the online context only; Prompt-DT "
        "and DT: no prompt"
        + ("; S5-PPO: the first episode of a trial" if online else "")
        + "); few-shot = Meta-DT prompts itself with the highest-error segment of a zero-shot "
        "episode of the task, Prompt-DT gets the last 5 steps of an expert demo of the task "
        "(privileged)" + (", S5-PPO the second episode of a trial." if online else "."),
        "",
        "The paper's claims, checked on these numbers:",
        "",
        *_claims(rows),
        "",
        "Step timings (s): "
        + ", ".join(f"{k} {v}" for k, v in report["step_seconds"].items())
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
