"""``make mutants``: deliberate breakages of core behaviours, applied one at a time, each run
against the tests that guard it; the suite must fail on every one.

A mutant replaces one exact piece of one source file (it must occur there exactly once, so a
refactor that moves the code makes the mutant fail loudly instead of silently testing nothing)
and names the test files that should catch it. ``--full`` runs the whole suite on each mutant
instead (much longer). The source is restored after every mutant, also on Ctrl-C; a backup left
by a killed run is restored first thing.

Results go to ``docs/testing/mutants.json`` and ``docs/testing/mutants.md`` (caught or missed,
the first failing test, seconds per run). Exit code 1 if any mutant survives.

    python tests/mutants.py                # every mutant, its own tests
    python tests/mutants.py gae-truncation dt-causality   # some of them
    python tests/mutants.py --list
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKUP = ROOT / ".mutant-backup"  # (path, original text) of a mutant being run
OUT = ROOT / "docs" / "testing"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    behaviour: str  # what breaks, in words
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutant
MUTANTS = [
    # -- the resettable scan ------------------------------------------------------------------
    M(
        "scan-resets-ignored",
        "episode resets inside the associative scan are ignored",
        "seqrl/scan.py",
        "keep = 1 - resets.reshape(",
        "keep = 1 + 0 * resets.reshape(",
        ("tests/test_sequence.py",),
    ),
    M(
        "scan-carry-dropped",
        "the carried state does not enter the scan",
        "seqrl/scan.py",
        "b = b.at[0].add(a[0] * h0)",
        "b = b.at[0].add(0 * a[0] * h0)",
        ("tests/test_sequence.py",),
    ),
    M(
        "scan-adjoint",
        "the scan's backward pass pairs the adjoint with the wrong states",
        "seqrl/scan.py",
        "return adjoint * h_prev, adjoint",
        "return adjoint * h, adjoint",
        ("tests/test_sequence.py",),
    ),
    # -- GAE -------------------------------------------------------------------------------------
    M(
        "gae-termination",
        "GAE bootstraps from the value of a terminal state",
        "seqrl/returns.py",
        "not_terminated = 1.0 - terminated.astype(values.dtype)",
        "not_terminated = 1.0 - 0 * terminated.astype(values.dtype)",
        ("tests/test_returns.py",),
    ),
    M(
        "gae-truncation",
        "GAE drops the bootstrap at a time-limit truncation",
        "seqrl/returns.py",
        "deltas = rewards + gamma * not_terminated * next_values - values",
        "deltas = rewards + gamma * not_done * next_values - values",
        ("tests/test_returns.py",),
    ),
    M(
        "gae-boundary",
        "the advantage recursion runs across episode boundaries",
        "seqrl/returns.py",
        "advantage = delta + gamma * gae_lambda * nd * carry",
        "advantage = delta + gamma * gae_lambda * carry",
        ("tests/test_returns.py",),
    ),
    # -- PPO -------------------------------------------------------------------------------------
    M(
        "ppo-acting-resets",
        "PPO acts without resetting the recurrent state at episode starts",
        "agents/ppo.py",
        "resets = jnp.concatenate([s.first, jnp.zeros_like(s.first)])[None]",
        "resets = jnp.concatenate([0 * s.first, jnp.zeros_like(s.first)])[None].astype(bool)",
        ("tests/test_learning.py", "tests/test_ppo_recurrent.py"),
    ),
    M(
        "ppo-loss-resets",
        "PPO's loss re-runs the rollout without its episode starts",
        "agents/ppo.py",
        "_, dist, value = self.network.apply(params, carry, b.obs, b.first)",
        "_, dist, value = self.network.apply(params, carry, b.obs, jnp.zeros_like(b.first))",
        ("tests/test_learning.py",),
    ),
    M(
        "ppo-loss-carry",
        "PPO's loss re-runs the rollout from a zero carry, not the one it started with",
        "agents/ppo.py",
        "carries = jax.tree.map(lambda x: split(x, 0), start_carry)",
        "carries = jax.tree.map(lambda x: split(jnp.zeros_like(x), 0), start_carry)",
        ("tests/test_learning.py",),
    ),
    M(
        "ppo-clip",
        "PPO's policy ratio is not clipped",
        "agents/ppo.py",
        "jnp.clip(ratio, 1 - h.clip_eps, 1 + h.clip_eps) * adv",
        "ratio * adv",
        ("tests/test_ppo.py",),
    ),
    M(
        "ppo-entropy-sign",
        "PPO's entropy bonus has the wrong sign",
        "agents/ppo.py",
        "- h.ent_coef * entropy",
        "+ h.ent_coef * entropy",
        ("tests/test_ppo.py",),
    ),
    M(
        "ppo-anneal",
        "PPO's learning rate is not annealed",
        "agents/ppo.py",
        "frac = 1.0 - state.update_step / self.config.num_updates if p.anneal_lr else 1.0",
        "frac = 1.0",
        ("tests/test_learning.py",),
    ),
    # -- S5 --------------------------------------------------------------------------------------
    M(
        "s5-zoh",
        "S5's zero-order hold forgets the 1/Lambda of Bbar",
        "seqrl/sequence/s5.py",
        "b_bar = ((a_bar - 1) / lam)[:, None] * b",
        "b_bar = (a_bar - 1)[:, None] * b",
        ("tests/test_sequence.py",),
    ),
    M(
        "s5-bilinear",
        "S5's bilinear Abar uses Delta Lambda instead of Delta Lambda / 2 in the numerator",
        "seqrl/sequence/s5.py",
        "a_bar = inv * (1 + step * lam / 2)",
        "a_bar = inv * (1 + step * lam)",
        ("tests/test_sequence.py",),
    ),
    M(
        "s5-conjugate",
        "S5 drops the factor 2 of its conjugate-symmetric output",
        "seqrl/sequence/s5.py",
        "scale = 2.0 if self.conj_sym else 1.0",
        "scale = 1.0",
        ("tests/test_sequence.py",),
    ),
    # -- Decision Transformer --------------------------------------------------------------------
    M(
        "dt-causality",
        "the Decision Transformer attends to future tokens",
        "agents/dt.py",
        "causal = jnp.tril(jnp.ones((3 * k, 3 * k), bool))",
        "causal = jnp.ones((3 * k, 3 * k), bool)",
        ("tests/test_dt.py",),
    ),
    M(
        "dt-returns-to-go",
        "returns-to-go are summed forward in time",
        "seqrl/returns.py",
        "jnp.cumsum(r[:, ::-1], axis=1)[:, ::-1]",
        "jnp.cumsum(r, axis=1)",
        ("tests/test_dt.py", "tests/test_meta.py"),
    ),
    M(
        "dt-rtg-not-decremented",
        "the DT's return-to-go is not decremented by the rewards it collects",
        "agents/dt.py",
        "rtg_prev - reward / d.return_scale",
        "rtg_prev - 0 * reward / d.return_scale",
        ("tests/test_dt.py",),
    ),
    M(
        "dt-ignores-rtg",
        "the DT does not read its return-to-go",
        "agents/dt.py",
        'r = nn.Dense(d, name="embed_return")(rtg[..., None]) + time',
        'r = nn.Dense(d, name="embed_return")(0 * rtg[..., None]) + time',
        ("tests/test_dt.py",),
    ),
    M(
        "dt-ignores-states",
        "the DT does not read its states",
        "agents/dt.py",
        's = nn.Dense(d, name="embed_state")(obs.reshape(b, k, -1)) + time',
        's = nn.Dense(d, name="embed_state")(0 * obs.reshape(b, k, -1)) + time',
        ("tests/test_dt.py",),
    ),
    # -- Meta-DT and its world model -------------------------------------------------------------
    M(
        "meta-z-acting",
        "Meta-DT acts with a zero task vector instead of its context's",
        "agents/meta_acting.py",
        "z = self.encode(state.wm_params, ctx, (n,))",
        "z = 0 * self.encode(state.wm_params, ctx, (n,))",
        ("tests/test_meta.py",),
    ),
    M(
        "meta-z-training",
        "Meta-DT trains on zero task vectors",
        "agents/meta_dt.py",
        "z = state.z_table[ep[:, None], win.timesteps] * win.mask[..., None]",
        "z = 0 * state.z_table[ep[:, None], win.timesteps] * win.mask[..., None]",
        ("tests/test_meta.py",),
    ),
    M(
        "meta-z-whitening",
        "Meta-DT's z table is centered but not whitened",
        "agents/meta_dt.py",
        "return wm_params, losses[-100:].mean(), errors, (z_table - shift) @ whiten",
        "return wm_params, losses[-100:].mean(), errors, z_table - shift",
        ("tests/test_meta.py",),
    ),
    M(
        "meta-z-model",
        "Meta-DT's state tokens ignore z",
        "agents/meta_dt.py",
        "jnp.concatenate([s, z], -1)",
        "jnp.concatenate([s, 0 * z], -1)",
        ("tests/test_meta.py",),
    ),
    M(
        "prompt-argmin",
        "the self-guided prompt picks the window of least world-model error",
        "agents/meta_acting.py",
        "return jnp.argmax(window_sums(errors, k), axis=-1)",
        "return jnp.argmin(window_sums(errors, k), axis=-1)",
        ("tests/test_meta.py",),
    ),
    M(
        "prompt-few-shot-ignored",
        "few-shot evaluation forgets the prompt it chose",
        "agents/meta_acting.py",
        "return run(fns.self_guided_prompt(traj, key_few), key_few)[2]",
        "return run(fns.empty_prompt(), key_few)[2]",
        ("tests/test_meta.py",),
    ),
    M(
        "world-model-window",
        "the context encoder sees step t itself",
        "agents/world_model.py",
        "j = t - horizon + jnp.arange(horizon)",
        "j = t - horizon + 1 + jnp.arange(horizon)",
        ("tests/test_meta.py",),
    ),
    M(
        "task-split-overlap",
        "the held-out split overlaps the training tasks",
        "envs/meta/core.py",
        'part = slice(0, self.num_train) if name == "train" else slice(self.num_train, None)',
        'part = slice(0, self.num_train) if name == "train" else slice(0, self.num_test)',
        ("tests/test_meta.py",),
    ),
    M(
        "meta-dataset-split",
        "Meta-DT reads every task's episodes, held-out ones included",
        "seqrl/data.py",
        "keep = np.nonzero((tasks >= lo) & (tasks < hi))[0]",
        "keep = np.arange(len(tasks))",
        ("tests/test_meta.py",),
    ),
    # -- action heads ----------------------------------------------------------------------------
    M(
        "fourier-density",
        "the Fourier density loses its constant 1/2",
        "seqrl/heads.py",
        "return 0.5 + jnp.real(jnp.sum(c[..., None, 1:] * phase, axis=-1))",
        "return 1.0 + jnp.real(jnp.sum(c[..., None, 1:] * phase, axis=-1))",
        ("tests/test_heads.py",),
    ),
    M(
        "fourier-cdf",
        "the Fourier CDF's terms start from 1 instead of (-1)^k",
        "seqrl/heads.py",
        "terms = (jnp.exp(1j * jnp.pi * k * x[..., None]) - (-1.0) ** k) / (1j * jnp.pi * k)",
        "terms = (jnp.exp(1j * jnp.pi * k * x[..., None]) - 1.0) / (1j * jnp.pi * k)",
        ("tests/test_heads.py",),
    ),
    M(
        "categorical-log-prob",
        "the categorical log-probability is half what it should be",
        "seqrl/heads.py",
        "log_prob = jnp.sum(jnp.where(chosen, logp, 0.0), axis=-1)",
        "log_prob = jnp.sum(jnp.where(chosen, 0.5 * logp, 0.0), axis=-1)",
        ("tests/test_heads.py",),
    ),
    # -- what is written to disk -----------------------------------------------------------------
    M(
        "checkpoint-contents",
        "checkpoints store zeros for every float array",
        "seqrl/checkpoint.py",
        "        state = jax.device_get(state)\n        meta = {",
        "        state = jax.tree.map(\n            lambda x: x * 0 if x.dtype.kind == 'f' else x,"
        " jax.device_get(state)\n        )\n        meta = {",
        ("tests/test_checkpoint.py",),
    ),
    M(
        "dataset-final-observation",
        "datasets store the last observation in place of the final one",
        "seqrl/data.py",
        "observations=np.concatenate([t.obs[i, :length], t.final_obs[i][None]]),",
        "observations=np.concatenate([t.obs[i, :length], t.obs[i, length - 1][None]]),",
        ("tests/test_data.py",),
    ),
    M(
        "collect-medium-rule",
        "collect's medium checkpoint is chosen 70% of the way to the expert, not halfway",
        "seqrl/collection.py",
        "MEDIUM_FRACTION = 0.5",
        "MEDIUM_FRACTION = 0.7",
        ("tests/test_collect.py",),
    ),
    # -- environments and evaluation -------------------------------------------------------------
    M(
        "vec-env-shared-key",
        "every copy of a vectorized env steps with the same random key",
        "envs/core.py",
        "keys = jax.random.split(key, self.num_envs)\n        return jax.vmap(self.env.step,",
        "keys = jax.random.split(key, self.num_envs)[:1].repeat(self.num_envs, 0)\n"
        "        return jax.vmap(self.env.step,",
        ("tests/test_envs.py",),
    ),
    M(
        "auto-reset-final-observation",
        "after an auto-reset the final observation is the next episode's first",
        "envs/core.py",
        'info = {**info, "final_observation": obs}',
        'info = {**info, "final_observation": obs_reset}',
        ("tests/test_envs.py",),
    ),
    M(
        "episode-length",
        "episode statistics count a step twice",
        "envs/core.py",
        "length = state.episode_length + 1",
        "length = state.episode_length + 2",
        ("tests/test_envs.py",),
    ),
    M(
        "normalize-observation",
        "observations are centred but not scaled",
        "envs/core.py",
        "return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)",
        "return jnp.clip(x - self.mean, -clip, clip)",
        ("tests/test_envs.py",),
    ),
    M(
        "evaluation-later-episode",
        "evaluation reports each copy's latest episode, not its first",
        "seqrl/evaluate.py",
        'newly = jnp.logical_and(info["episode_done"], step.active)',
        'newly = info["episode_done"]',
        ("tests/test_envs.py",),
    ),
    # -- more of the agents ----------------------------------------------------------------------
    M(
        "rnn-reset",
        "GRU/LSTM layers keep their state across episode starts",
        "seqrl/sequence/rnn.py",
        "carry = jax.tree.map(lambda c: jnp.where(reset_t[:, None], 0.0, c), carry)",
        "carry = carry",
        ("tests/test_sequence.py",),
    ),
    M(
        "s4d-zoh",
        "S4D's zero-order hold forgets the 1/A of dB",
        "seqrl/sequence/s4d.py",
        "db = (da - 1) / a",
        "db = da - 1",
        ("tests/test_sequence.py",),
    ),
    M(
        "ppo-advantages-unnormalized",
        "PPO's advantages are not standardized per minibatch",
        "agents/ppo.py",
        "batches = batches.replace(advantage=(adv - mean) / (std + 1e-8))",
        "batches = batches.replace(advantage=adv)",
        ("tests/test_ppo.py",),
    ),
    M(
        "categorical-greedy-sample",
        "the categorical head samples its most likely action",
        "seqrl/heads.py",
        "return jax.random.categorical(key, self.logits).astype(jnp.int32)",
        "return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)",
        ("tests/test_heads.py",),
    ),
    M(
        "gaussian-no-noise",
        "the Gaussian head samples its mean",
        "seqrl/heads.py",
        "return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)",
        "return self.mean + 0 * jax.random.normal(key, self.mean.shape)",
        ("tests/test_learning.py",),
    ),
    M(
        "dt-window-padding",
        "the DT's windows are padded on the right instead of the left",
        "agents/dt.py",
        "valid = j >= pad",
        "valid = j < steps",
        ("tests/test_dt.py",),
    ),
    # -- the loop and collection -----------------------------------------------------------------
    M(
        "resume-skips-a-chunk",
        "a resumed run skips the chunk after its checkpoint",
        "seqrl/loop.py",
        'start_chunk, train_seconds = meta["chunks_done"], meta["train_seconds"]',
        'start_chunk, train_seconds = meta["chunks_done"] + 1, meta["train_seconds"]',
        ("tests/test_checkpoint.py",),
    ),
    M(
        "nonfinite-parameters-unchecked",
        "the non-finite guard does not look at the parameters",
        "seqrl/loop.py",
        'jax.tree.leaves(getattr(state, "params", state)),',
        "[],",
        ("tests/test_reliability.py",),
    ),
    M(
        "collect-records-next-observation",
        "collected datasets pair each action with the observation after it",
        "seqrl/evaluate.py",
        'step = Step(c["obs"], action, reward, term, trunc, next_obs, ~c["finished"])',
        'step = Step(obs, action, reward, term, trunc, next_obs, ~c["finished"])',
        ("tests/test_collect.py",),
    ),
    # -- distribution ----------------------------------------------------------------------------
    M(
        "unsharded-batch",
        "a run asked to shard its env batch over devices keeps it on one",
        "seqrl/distributed.py",
        "specs = self.data_axis.specs(one_seed)",
        "specs = replicated_specs(one_seed)",
        ("tests/test_distributed.py",),
    ),
]


def _restore_backup() -> None:
    if BACKUP.exists():
        record = json.loads(BACKUP.read_text())
        (ROOT / record["path"]).write_text(record["text"])
        BACKUP.unlink()
        print(f"restored {record['path']} from a mutant run that was cut short")


def _apply(m: Mutant) -> str:
    path = ROOT / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(
            f"mutant {m.name}: its source snippet occurs {text.count(m.old)} times in {m.path} "
            "(expected once); update the mutant to the code"
        )
    BACKUP.write_text(json.dumps({"path": m.path, "text": text}))
    path.write_text(text.replace(m.old, m.new))
    return text


def _first_failure(output: str) -> str | None:
    """The first test that failed (or errored in a fixture): a test id, not a whole file that
    could not be collected."""
    found = re.search(r"^(?:FAILED|ERROR) (\S+::\S+)", output, re.MULTILINE)
    return found.group(1) if found else None


def run_one(m: Mutant, full: bool, workers: int, timeout: float) -> dict:
    original = _apply(m)
    tests = [] if full else list(m.tests)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    if workers > 1:
        cmd += ["-n", str(workers), "--dist", "loadgroup"]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = -1, (e.stdout or b"").decode(errors="replace") if e.stdout else ""
    finally:
        (ROOT / m.path).write_text(original)
        BACKUP.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    # caught: a test failed (pytest exits 1, or 2 when -x stops the workers); survived: all
    # passed; error: nothing ran to a verdict (a collection error, the timeout)
    first = _first_failure(output)
    status = "survived" if code == 0 else "caught" if first else "error"
    return {
        "name": m.name,
        "behaviour": m.behaviour,
        "file": m.path,
        "tests": tests or ["(whole suite)"],
        "status": status,
        "first_failure": first,
        "seconds": round(seconds, 1),
        "tail": output.strip().splitlines()[-1] if output.strip() else "",
    }


def _machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = names[0].strip() if names else model
    return f"{os.cpu_count()} cores, {model}"


def _report(results: list[dict], args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {
        "date": when,
        "command": "python tests/mutants.py" + (" --full" if args.full else ""),
        "machine": _machine(),
        "load_average": os.getloadavg(),
        "workers": args.workers,
    }
    (OUT / "mutants.json").write_text(json.dumps({**meta, "mutants": results}, indent=1) + "\n")
    caught = sum(r["status"] == "caught" for r in results)
    lines = [
        "# Mutation check",
        "",
        f"`{meta['command']}` ({when}; {meta['machine']}; load average "
        f"{meta['load_average'][0]:.1f}; {args.workers} pytest workers; compile cache as left "
        "by earlier runs): each breakage applied alone, then the tests that guard it.",
        "",
        f"**{caught} of {len(results)} caught.**",
        "",
        "| mutant | what breaks | file | tests run | result | first failing test | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        first = f"`{r['first_failure']}`" if r["first_failure"] else "-"
        tests = ", ".join(Path(t).name for t in r["tests"])
        lines.append(
            f"| {r['name']} | {r['behaviour']} | {r['file']} | {tests} | {r['status']} | "
            f"{first} | {r['seconds']:.0f} |"
        )
    (OUT / "mutants.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--full", action="store_true", help="run the whole suite per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per mutant")
    args = parser.parse_args(argv)
    _restore_backup()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.behaviour}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))} (see --list)")
    for m in chosen:  # every snippet is still in the code before anything runs
        if (ROOT / m.path).read_text().count(m.old) != 1:
            parser.error(f"mutant {m.name}: its snippet is not (exactly once) in {m.path}")
    results = []
    for m in chosen:
        result = run_one(m, args.full, args.workers, args.timeout)
        results.append(result)
        first = result["first_failure"] or result["tail"]
        print(f"{result['status']:8s} {m.name:28s} {result['seconds']:6.1f} s  {first}", flush=True)
    if not args.names:
        _report(results, args)
    survived = [r["name"] for r in results if r["status"] != "caught"]
    print(f"{len(results) - len(survived)} of {len(results)} caught", end="")
    print(f"; not caught: {', '.join(survived)}" if survived else "")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
