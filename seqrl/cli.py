"""The ``seqrl`` command: train | eval | collect | plot | eval-meta | envs.

Exit codes: 0 success, 2 user error (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from seqrl.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (not usage + message) and exits 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _int_at_least(low: int, words: str):
    """An argparse type: an integer >= ``low`` (``words`` names the range in errors)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _noise_levels(text: str) -> float | tuple[float, ...]:
    """``EPS`` or ``EPS,EPS,...`` (levels that each task's episodes cycle through)."""
    levels = tuple(_nonnegative_float(part.strip()) for part in text.split(","))
    return levels[0] if len(levels) == 1 else levels


def _opening(text: str) -> list[list[float]]:
    """``A;A;...`` with each action ``x,y,...``: the first actions of every episode."""
    try:
        return [[float(x) for x in action.split(",")] for action in text.split(";")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected actions like 1,0;0,1 (numbers, ',' within an action, ';' between), "
            f"got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="seqrl",
        description="seqrl: sequence models that make decisions (JAX).",
        epilog="Run `seqrl COMMAND --help` for the options of a command.",
    )
    from seqrl import __version__

    parser.add_argument("--version", action="version", version=f"seqrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_collect(sub)
    _add_plot(sub)
    _add_eval_meta(sub)
    _add_envs(sub)
    return parser


def _add_train(sub) -> None:
    """``seqrl train``: CONFIG and overrides, the run directory, resume, multi-host flags."""
    p = sub.add_parser(
        "train",
        help="train an agent from a YAML config",
        description="Train an agent. Overrides use dotted keys: ppo.lr=1e-3 num_seeds=4. "
        "The run directory (default runs/<config>-<time>) receives config.yaml, metrics.jsonl, "
        "TensorBoard events, checkpoints/, curve.png and summary.json.",
    )
    p.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="a YAML config (optional with --resume) followed by key=value overrides",
    )
    p.add_argument("--run-dir", type=Path, help="where to write the run (must not hold a run)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = p.add_argument_group(
        "multi-host (jax.distributed)",
        "Run one `seqrl train` per process with the same config and --run-dir; every process "
        "trains its share of the seeds or batch, process 0 alone logs and writes the run. "
        "Each flag can also come from an environment variable.",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="address of process 0 (env SEQRL_COORDINATOR), e.g. 127.0.0.1:12355",
    )
    group.add_argument(
        "--num-processes",
        type=_positive_int,
        metavar="N",
        help="number of processes (env SEQRL_NUM_PROCESSES)",
    )
    group.add_argument(
        "--process-id",
        type=_nonnegative_int,
        metavar="I",
        help="this process, 0..N-1 (env SEQRL_PROCESS_ID)",
    )


def _add_eval(sub) -> None:
    """``seqrl eval``: a run's latest checkpoint rolled out on device."""
    p = sub.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Roll out a run's latest checkpoint on device; prints mean +- std of the "
        "episode return and writes eval.json into the run directory.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--episodes", type=_positive_int, default=32, help="episodes per seed")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed")
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: mode)")
    p.add_argument(
        "--target-return",
        type=float,
        metavar="R",
        help="return-to-go to condition on (Decision Transformer; default: the config's)",
    )


def _add_collect(sub) -> None:
    """``seqrl collect``: a trained run (or a scripted policy) into a Minari dataset."""
    p = sub.add_parser(
        "collect",
        help="roll out a trained run into an offline dataset (Minari format)",
        description="Roll out a trained online run (seed 0) in parallel envs on device and write "
        "a Minari dataset (HDF5). expert = the latest checkpoint; medium = the earlier "
        "checkpoint whose return is closest to halfway between a random policy and the latest; "
        "mixed = 70% medium + 30% expert episodes. Load it with seqrl.data.load_dataset(DATASET) "
        "or with minari: MINARI_DATASETS_PATH=<parent of DATASET> and "
        "minari.load_dataset('<name of DATASET>').",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR|ENV",
        help="a trained run directory, or a task family with a scripted policy "
        "(meta/ML1-reach, meta/ML1-push, meta/ML1-pick-place: Meta-World's scripted policies, "
        "--episodes per task, action noise by --quality or --noise)",
    )
    p.add_argument("--episodes", type=_positive_int, required=True, help="episodes to record")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DATASET",
        help="dataset directory to create, named like a Minari id NAME-vVERSION "
        "(e.g. datasets/cartpole-expert-v0); must not exist or be empty",
    )
    p.add_argument(
        "--quality", choices=["expert", "medium", "mixed"], default="expert", help="which policy"
    )
    p.add_argument(
        "--noise",
        type=_noise_levels,
        default=None,
        metavar="EPS[,EPS...]",
        help="discrete: probability of a random action; continuous: std of Gaussian noise "
        "(actions are clipped to the space); default 0 for runs, and for scripted policies "
        "0.1 (expert) / 1.0 (medium). For runs, several levels (0,0.5,1): each task's "
        "episodes cycle through them (exploratory data)",
    )
    p.add_argument(
        "--checkpoint",
        type=int,
        metavar="STEP",
        help="use this checkpoint (an update number in RUN_DIR/checkpoints) instead of the "
        "automatic choice: the latest for expert, the medium one for medium and mixed",
    )
    p.add_argument("--seed", type=int, default=0, help="collection seed")
    p.add_argument(
        "--max-steps",
        type=_positive_int,
        metavar="N",
        help="cap on steps per episode (default: the env's time limit)",
    )
    p.add_argument(
        "--deterministic", action="store_true", help="act with the policy's mode (default: sample)"
    )
    p.add_argument(
        "--opening",
        type=_opening,
        default=None,
        metavar="A;A;...",
        help="trained runs, continuous actions: every episode's first actions, the same for "
        "all and exact (--noise starts after it; e.g. 1,0;0,1;-1,0: a probe before the policy "
        "acts, so that experts' data also shows exploration; Meta-DT's meta.opening repeats it)",
    )


def _add_plot(sub) -> None:
    """``seqrl plot``: the learning curves of runs."""
    p = sub.add_parser(
        "plot",
        help="overlay the learning curves of runs",
        description="Plot the training return (mean +- std over seeds) of one or more runs.",
    )
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", type=Path, default=Path("plot.png"), help="PNG to write")
    p.add_argument("--labels", nargs="+", help="legend labels, one per run")


def _add_eval_meta(sub) -> None:
    """``seqrl eval-meta``: few-shot / zero-shot scores on a task family's tasks."""
    p = sub.add_parser(
        "eval-meta",
        help="few-shot / zero-shot evaluation on a task family's held-out tasks",
        description="Evaluate a run trained on a task family (meta/...) on the tasks of a split: "
        "per-task returns, mean +- std over tasks and seeds, and the normalized score "
        "(R - R_random) / (R_oracle - R_random). zero-shot: no demonstrations (Meta-DT: only "
        "the online context; in-context PPO: the first episode of a trial); few-shot: Meta-DT "
        "prompts itself with the highest-error segment of a zero-shot episode, Prompt-DT uses "
        "the last k steps of an expert demo (--protocol prompt-dt), in-context PPO reports the "
        "second episode of a trial. Writes eval_meta_<mode>_<split>.json into the run directory.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--mode", required=True, choices=["zero-shot", "few-shot"], help="protocol")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which tasks")
    p.add_argument(
        "--protocol",
        choices=["meta-dt", "prompt-dt", "in-context"],
        default=None,
        help="few-shot prompts: the agent's own highest-error segment (meta-dt) or an expert "
        "demo (prompt-dt); in-context PPO: trials (in-context); default: the run's own "
        "(prompt-dt for Prompt-DT runs)",
    )
    p.add_argument(
        "--rounds", type=_positive_int, default=4, help="rounds of num_envs episodes per task"
    )
    p.add_argument("--seed", type=int, default=0, help="evaluation seed")
    p.add_argument(
        "--reference-dataset",
        metavar="DATASET",
        default=None,
        help="for families without an oracle policy (Cheetah-Vel, Ant-Dir): the normalized "
        "score's R_oracle is the best episode of each task in this (expert) dataset; default: "
        "the run's prompt_dataset or dataset",
    )


def _add_envs(sub) -> None:
    """``seqrl envs``: the registered environments."""
    sub.add_parser("envs", help="list the registered environments")


def _train(args) -> int:
    from seqrl import api

    items = list(args.items)
    config = None
    if items and "=" not in items[0]:
        config = items.pop(0)
    bad = [i for i in items if "=" not in i]
    if bad:
        raise UserError(f"expected key=value overrides, got {bad[0]!r}")
    if config is None and args.resume is None:
        raise UserError("a CONFIG file is required (or --resume RUN_DIR)")
    from seqrl import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    result = api.train(
        config,
        run_dir=args.run_dir,
        resume=args.resume,
        progress=False if args.no_progress else None,
        overrides=items,
    )
    if result.summary:
        s = result.summary
        print(
            f"final return {s['final_return_mean']:.2f} +- {s['final_return_std']:.2f} "
            f"over {s['num_seeds']} seed(s) x {s['eval_episodes']} episodes; "
            f"compile {s['compile_seconds']:.1f} s, train {s['train_seconds']:.1f} s, "
            + (
                f"{s['env_steps_per_second']:,.0f} env steps/s"
                if "env_steps_per_second" in s
                else f"{s['samples_per_second']:,.0f} samples/s"
            )
        )
        from seqrl.plotting import sparkline

        curve = sparkline(result.run_dir)
        if curve:
            print(f"return:  {curve}")
        if "final_return_per_episode_index" in s:
            per_index = ", ".join(f"{r:.2f}" for r in s["final_return_per_episode_index"])
            print(f"held-out tasks, return per episode of a trial: {per_index}")
        print(f"results: {result.run_dir / 'summary.json'}")
        print(f"plot:    {result.run_dir / 'curve.png'}")
    return 0


def _eval(args) -> int:
    import numpy as np

    from seqrl import api
    from seqrl.files import ensure_writable_dir, write_json_atomic

    policy = api.load(args.run_dir)
    ensure_writable_dir(args.run_dir, f"cannot write eval.json into {args.run_dir}")
    evaluation = policy.evaluate_all(
        args.episodes,
        args.seed,
        deterministic=not args.stochastic,
        target_return=args.target_return,
    )
    returns = evaluation["returns"]
    result = {
        "run_dir": str(args.run_dir),
        "update": policy.step,
        "episodes_per_seed": args.episodes,
        "deterministic": not args.stochastic,
        "target_return": args.target_return,
        "return_mean": float(np.nanmean(returns)),
        "return_std": float(np.nanstd(returns)),
        "return_per_seed": [float(r) for r in np.nanmean(returns, axis=1)],
    }
    if "episode_returns" in evaluation:  # in-context envs: held-out tasks, per episode index
        per_index = np.nanmean(evaluation["episode_returns"], axis=(0, 1))
        result["return_per_episode_index"] = [float(r) for r in per_index]
    write_json_atomic(args.run_dir / "eval.json", result)
    print(json.dumps(result))
    return 0


def _collect(args) -> int:
    from seqrl.collection import collect, collect_scripted
    from seqrl.envs import is_host

    if is_host(args.run_dir) and not Path(args.run_dir).exists():
        if args.checkpoint is not None or args.deterministic or args.opening:
            raise UserError(
                f"{args.run_dir} is collected from its scripted policy: --checkpoint, "
                "--deterministic and --opening apply to trained runs only"
            )
        if isinstance(args.noise, tuple):
            raise UserError("--noise: a scripted policy takes one level (several: trained runs)")
        collect_scripted(
            args.run_dir,
            args.episodes,
            args.output,
            quality=args.quality,
            noise=args.noise,
            seed=args.seed,
            env_kwargs={"episode_length": args.max_steps} if args.max_steps else None,
        )
        return 0
    collect(
        args.run_dir,
        args.episodes,
        args.output,
        quality=args.quality,
        noise=0.0 if args.noise is None else args.noise,
        checkpoint=args.checkpoint,
        seed=args.seed,
        max_steps=args.max_steps,
        deterministic=args.deterministic,
        opening=args.opening,
    )
    return 0


def _plot(args) -> int:
    from matplotlib.backend_bases import FigureCanvasBase

    from seqrl.files import ensure_writable_dir
    from seqrl.plotting import plot_runs

    if args.labels and len(args.labels) != len(args.run_dirs):
        raise UserError(f"{len(args.labels)} labels for {len(args.run_dirs)} runs")
    kinds = FigureCanvasBase.get_supported_filetypes()
    if args.output.is_dir() or args.output.suffix.lower().lstrip(".") not in kinds:
        raise UserError(f"output {args.output}: name an image file (plot.png, plot.pdf, ...)")
    ensure_writable_dir(args.output.absolute().parent, f"cannot write {args.output}")
    out = plot_runs(args.run_dirs, args.output, args.labels)
    print(f"plot: {out}")
    return 0


def _eval_meta(args) -> int:
    from seqrl.meta_eval import eval_meta

    eval_meta(
        args.run_dir,
        args.mode,
        split=args.split,
        protocol=args.protocol,
        rounds=args.rounds,
        seed=args.seed,
        reference_dataset=args.reference_dataset,
    )
    return 0


def _envs(args) -> int:
    from seqrl.envs import is_host, names

    for name in names():
        print(f"{name}  (host-side: offline agents and eval-meta only)" if is_host(name) else name)
    return 0


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _is_override(token: str) -> bool:
    key, sep, _ = token.partition("=")
    return bool(sep) and bool(key) and not key.startswith("-")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        if argv is not None and any("\x00" in str(a) for a in argv):  # never from a shell
            raise UserError("an argument contains a NUL byte")
        args, extra = parser.parse_known_args(argv)
        # `seqrl train CONFIG --run-dir DIR key=value`: overrides may follow the options too
        if extra and args.command == "train" and all(_is_override(e) for e in extra):
            args.items += extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            parser.print_help()
            return 2
        handler = {
            "train": _train,
            "eval": _eval,
            "collect": _collect,
            "plot": _plot,
            "eval-meta": _eval_meta,
            "envs": _envs,
        }[args.command]
        return handler(args)
    except UserError as e:
        print(f"seqrl: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqrl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
