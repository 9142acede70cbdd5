"""PPO on one small continuous-control task, side by side in one invocation: seqrl and rejax on
brax inverted_pendulum (spring backend), Stable-Baselines3 on gymnasium's MuJoCo
InvertedPendulum-v5 (the same task in another simulator: SB3 has no brax backend).

    .venv/bin/python -m benchmarks.ppo_brax           # full run: writes docs/benchmarks*
    .venv/bin/python -m benchmarks.ppo_brax --quick   # smoke test of the plumbing (~2-3 min)

The machinery is :mod:`benchmarks.ppo_cartpole`'s: each peer runs in its own process and
interpreter (``--task inverted_pendulum`` of :mod:`benchmarks.peer_seqrl`, ``peer_rejax``,
``peer_sb3``), the peer venvs are made from ``benchmarks/requirements-*.txt`` (they pin brax
and mujoco for this task), seqrl compiles cold (``SEQRL_COMPILE_CACHE=0``), and the script
checks that seqrl and rejax ran the same hyperparameters. All three peers run seqrl's
``configs/ppo/brax/inverted_pendulum.yaml`` hyperparameters (SB3 too: rl-zoo has no entry for
this task that the script could take instead).
"""

from __future__ import annotations

from benchmarks.common import ROOT, SOLVE_RETURNS, observed_and_notes, print_run, time_to_return
from benchmarks.ppo_cartpole import (
    PEERS,
    compare,
    measured_on,
    parse_args,
    peer_table,
    peer_versions,
    ratios,
    save,
    write_doc,
)

TASK = "inverted_pendulum"
DOC_JSON = ROOT / "docs" / "benchmarks" / "ppo_brax.json"
SECTION = "## PPO on brax inverted_pendulum: seqrl vs rejax vs Stable-Baselines3 (MuJoCo)"
NOTES_START = "<!-- ppo_brax:notes:start -->"
NOTES_END = "<!-- ppo_brax:notes:end -->"
COMMAND = ".venv/bin/python -m benchmarks.ppo_brax"

LABELS = {"seqrl": "seqrl PPO (brax)", "rejax": "rejax PPO (brax)", "sb3": "SB3 PPO (MuJoCo)"}
FULL_STEPS = {"seqrl": 499_712, "rejax": 499_712, "sb3": 499_712}
QUICK_STEPS = {"seqrl": 20_480, "rejax": 20_480, "sb3": 20_480}
THRESHOLD = f"{SOLVE_RETURNS[TASK]:g}"
LOW = 500.0  # a second, lower threshold, read from the same curves (10-episode window)
# (name, numerator peer, denominator peer, metric, comparison, target): no targets were set
# for this task, so the ratios are reported without a verdict.
WALL = f"wall_to_{THRESHOLD}_w10"
TARGETS = (
    ("seqrl / rejax env steps/s", "seqrl", "rejax", "env_steps_per_second", ">=", None),
    ("seqrl / SB3 env steps/s (brax / MuJoCo)", "seqrl", "sb3", "env_steps_per_second", ">=", None),
    (f"seqrl / rejax wall-to-{THRESHOLD}", "seqrl", "rejax", WALL, "<=", None),
    (f"seqrl / SB3 wall-to-{THRESHOLD}", "seqrl", "sb3", WALL, "<=", None),
    (f"seqrl / rejax wall-to-{LOW:g}", "seqrl", "rejax", f"wall_to_{LOW:g}_w10", "<=", None),
    (f"seqrl / SB3 wall-to-{LOW:g}", "seqrl", "sb3", f"wall_to_{LOW:g}_w10", "<=", None),
)


def add_threshold(results: dict[str, dict], threshold: float) -> None:
    """``wall_to_<threshold>_w10`` / ``steps_to_..._w10`` of every peer, from its logged curve."""
    for r in results.values():
        cols = r["updates"]["columns"]
        rows = [dict(zip(cols, row, strict=True)) for row in r["updates"]["rows"]]
        solve = time_to_return(rows, threshold, windows=(10,))["windows"]["10"]
        r[f"wall_to_{threshold:g}_w10"] = solve and round(solve["wall_seconds"], 2)
        r[f"steps_to_{threshold:g}_w10"] = solve and solve["env_steps"]


# (row label, result key or None for the load averages, digits)
ROWS = (
    ("env steps trained", "env_steps", 0),
    ("compile s", "compile_seconds", 1),
    ("env steps/s (training, compile excluded)", "env_steps_per_second", 0),
    (f"wall-to-{THRESHOLD} s, incl. compile (10-episode mean)", f"wall_to_{THRESHOLD}_w10", 1),
    (f"env steps to {THRESHOLD} (10-episode mean)", f"steps_to_{THRESHOLD}_w10", 0),
    (f"wall-to-{THRESHOLD} s, incl. compile (100-episode mean)", f"wall_to_{THRESHOLD}", 1),
    (f"env steps to {THRESHOLD} (100-episode mean)", f"steps_to_{THRESHOLD}", 0),
    (f"wall-to-{LOW:g} s, incl. compile (10-episode mean)", f"wall_to_{LOW:g}_w10", 1),
    (f"env steps to {LOW:g} (10-episode mean)", f"steps_to_{LOW:g}_w10", 0),
    ("final return (16 eval episodes, deterministic; max 1000)", "final_return", 1),
    ("peak RSS MB", "process_peak_rss_mb", 0),
    ("process wall s (imports to exit)", "process_wall_seconds", 1),
    ("load average before / after", None, 0),
)


def table(report: dict) -> str:
    return peer_table(report, LABELS, ROWS)


def facts(report: dict) -> list[str]:
    """Observations computed from this run, for the doc."""
    results, out = report["results"], []
    for peer in PEERS:
        r = results.get(peer)
        wall = r and r.get(f"wall_to_{THRESHOLD}_w10")
        # seqrl may compile a remainder chunk late in training: then compile > wall-to
        if r and wall and 0 < r["compile_seconds"] <= wall:
            out.append(
                f"{LABELS[peer]}: compiling is {r['compile_seconds'] / wall:.0%} of its "
                f"wall-to-{THRESHOLD}."
            )
        if r and not wall:
            out.append(
                f"{LABELS[peer]} did not reach {THRESHOLD} (10-episode mean) in "
                f"{r['env_steps']:,} env steps; its final evaluation returned "
                f"{r['final_return']:.1f}."
            )
    if report["quick"]:
        out.append("Quick mode: tiny budgets to test the plumbing; these numbers mean nothing.")
    if report["config_diffs"]:
        out.append("CONFIG MISMATCH seqrl vs rejax: " + "; ".join(report["config_diffs"]))
    return out


def markdown(report: dict, notes: str) -> str:
    m, results = report["machine"], report["results"]
    threads = report["threads"]
    steps = ", ".join(f"{LABELS[p]} {report['budgets'][p]:,}" for p in PEERS if p in results)
    return f"""{SECTION}

Command: `{COMMAND}` (`--quick`: a smoke test with tiny budgets). One invocation runs the three
peers one after another, each in its own process. {measured_on(report)}
in the table. Raw numbers and per-update curves: `docs/benchmarks/ppo_brax.json`.

**SB3 runs MuJoCo, not brax**: SB3 has no brax backend, so its peer is gymnasium's
`InvertedPendulum-v5` on MuJoCo (CPU; its 32 envs stepped one after another in a
`DummyVecEnv`), the same task (cart-pole balancing, +1 per step alive, the episode ends when
the pole leaves +-0.2 rad, at most 1000 steps; gymnasium gives 0 for the failing step, brax 1)
in another simulator. Its steps/s ratio therefore compares framework + simulator together;
seqrl vs rejax (both on brax spring) compares the PPO implementations alone.

{table(report)}

What each peer runs (budgets: {steps} env steps):
- **seqrl**: `configs/ppo/brax/inverted_pendulum.yaml` through `seqrl.loop.run`: brax 0.14.2
  inverted_pendulum, spring backend, 32 envs x 64 steps, 4 epochs x 4 minibatches, lr 3e-4
  annealed linearly per update, gamma 0.99, lambda 0.95, clip 0.2, ent 0, vf 0.5, max grad
  norm 0.5, 64x64 tanh, observations and rewards normalized, `loop.num_chunks: 20` (19
  jitted chunks: 18 of 13 updates, one of 10), `SEQRL_COMPILE_CACHE=0`.
- **rejax** 0.1.3 (gymnax 0.0.9, brax 0.14.2, its own venv): `rejax.PPO` on
  `rejax.compat.create("brax/inverted_pendulum", backend="spring")` with the same
  hyperparameters (checked key by key; rejax's `normalize_observations` /
  `normalize_rewards`), learning rate annealed by an optax schedule, `train_iteration` in the
  same jitted chunks (`--updates-per-chunk`). rejax's own differences stay: separate actor and
  critic with their own Adam, elementwise gradient clipping, no bootstrapping on the 1000-step
  time limit.
- **SB3** (torch CPU, `torch.set_num_threads(1)`): the same hyperparameters on MuJoCo
  `InvertedPendulum-v5` (32 envs in a `DummyVecEnv`, n_steps 64, batch 512, 4 epochs, lr linear
  from 3e-4, clip 0.2 constant, `VecNormalize` on observations and rewards), MlpPolicy 64x64
  tanh.

How it is measured (as in the CartPole comparison):
- *compile s*: ahead-of-time compiles of init, one chunk of updates and the final evaluation
  (seqrl's own `compile_seconds`; the same three programs for rejax); SB3 compiles nothing.
- *env steps/s*: env steps trained / seconds inside the training chunks (SB3: inside `learn`).
- *wall-to-{THRESHOLD}*: real seconds from the start of training, compile included, until the
  training episodes that ended in the most recent updates (at least 10 episodes; 100 in the
  second row) average >= {THRESHOLD} of the maximum 1000. {THRESHOLD}, not gymnasium's 950:
  training episodes run the stochastic policy, and in this budget the JAX peers' training mean
  stays below 950. One seed per peer, so steps-to-{THRESHOLD} is a single draw.
- *final return*: 16 evaluation episodes with the policy's mean action after training.
- *peak RSS*: `ru_maxrss` of the peer's process.
- Threads: XLA_FLAGS {threads["XLA_FLAGS"]}, i.e. XLA's own CPU thread pool over the
  {m["nproc"]} cores for both JAX peers; torch intra-op threads
  {threads.get("torch_intra_op_threads", "n/a")}.
- Versions: {peer_versions(report, LABELS)}.

{observed_and_notes(facts(report), (NOTES_START, NOTES_END), notes)}"""


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    budgets = QUICK_STEPS if args.quick else FULL_STEPS
    report = {
        "benchmark": "ppo_brax",
        "command": COMMAND,
        "task": "brax inverted_pendulum (seqrl, rejax); MuJoCo InvertedPendulum-v5 (SB3)",
        "plot_title": "PPO on inverted_pendulum (seqrl, rejax: brax; SB3: MuJoCo)",
        "budgets": {p: budgets[p] for p in args.peers},
        "solve_threshold": SOLVE_RETURNS[TASK],
    }
    timeout = args.timeout or (600.0 if args.quick else 900.0)
    report, workdir = compare(args, report, budgets, timeout, TASK, TARGETS)
    add_threshold(report["results"], LOW)
    report["ratios"] = ratios(report["results"], TARGETS)
    print_run(table(report), facts(report))
    if save(args, report, workdir, DOC_JSON):
        write_doc(report, SECTION, (NOTES_START, NOTES_END), markdown)


if __name__ == "__main__":
    main()
