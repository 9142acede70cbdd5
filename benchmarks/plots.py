"""One PNG per benchmark suite, drawn from its JSON report: every figure shows a ratio against a
peer measured in the same run (and the machine, date and commit in its footer)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _footer(fig, report: dict) -> None:
    m = report.get("machine", {})
    fig.text(
        0.01,
        0.01,
        f"{report.get('date', '?')}, seqrl {report.get('seqrl_revision', '?')}, "
        f"{m.get('nproc', '?')} cores {m.get('cpu', '')}, "
        f"load {report.get('load_before', ['?'])[0]}"
        + (" (quick: smoke-test budgets)" if report.get("quick") else ""),
        fontsize=7,
        color="gray",
    )


def _ratio_bars(ax, ratios: list[dict], title: str) -> None:
    rows = [r for r in ratios if r.get("value") is not None]
    names = [r["name"] for r in rows]
    ax.barh(names, [r["value"] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    for r, y in zip(rows, range(len(rows)), strict=True):
        ax.text(r["value"], y, f" {r['value']:.2f}", va="center", fontsize=8)
    ax.set_xlabel("ratio")
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()


def ppo_cartpole(report: dict, ax_curve, ax_ratio) -> None:
    for peer, result in report["results"].items():
        cols = result["updates"]["columns"]
        rows = [dict(zip(cols, r, strict=True)) for r in result["updates"]["rows"]]
        xs = [r["wall_seconds"] for r in rows if r["episodes"]]
        ys = [r["return_sum"] / r["episodes"] for r in rows if r["episodes"]]
        ax_curve.plot(xs, ys, label=peer)
    ax_curve.set_xlabel("wall seconds (compile included)")
    ax_curve.set_ylabel("training return")
    ax_curve.set_title(report.get("plot_title", "PPO on CartPole-v1"), fontsize=10)
    ax_curve.legend(fontsize=8)
    _ratio_bars(ax_ratio, report["ratios"], "seqrl / peer")


def backbones(report: dict, ax_curve, ax_ratio) -> None:
    cells = [r for r in report["results"] if r["backbone"] != "s5-popjaxrl"]
    lengths = sorted({r["num_steps"] for r in cells})
    speed = {(r["backbone"], r["num_steps"]): r["env_steps_per_second"] for r in cells}
    names = list(dict.fromkeys(r["backbone"] for r in cells))
    for b in names:
        ax_curve.plot(lengths, [speed[b, t] for t in lengths], marker="o", label=b)
        ratio = [speed[b, t] / speed["gru", t] for t in lengths]
        ax_ratio.plot(lengths, ratio, marker="o", label=b)
    for ax in (ax_curve, ax_ratio):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rollout length T")
        ax.legend(fontsize=8)
    ax_curve.set_ylabel("env steps/s")
    ax_curve.set_title("PPO backbones (StatelessCartPole)", fontsize=10)
    ax_ratio.set_ylabel("env steps/s / GRU's")
    ax_ratio.set_title("ratio to GRU, same run", fontsize=10)


def dt_throughput(report: dict, ax_curve, ax_ratio) -> None:
    results = report["results"]
    names = list(results)
    ax_curve.barh(names, [results[n]["samples_per_second"] for n in names], color="tab:green")
    ax_curve.set_xlabel("samples/s (windows of K steps)")
    ax_curve.set_title("Decision Transformer training", fontsize=10)
    ax_curve.invert_yaxis()
    _ratio_bars(ax_ratio, report["ratios"], "samples/s ratios, same run")


def fourier_toy(report: dict, ax_curve, ax_ratio) -> None:
    results = report["results"]
    heads = list(results)
    mean = {h: sum(results[h]["kl"]) / len(results[h]["kl"]) for h in heads}
    ax_curve.bar(heads, [mean[h] for h in heads], color="tab:orange")
    ax_curve.set_ylabel("KL(truth || predicted), mean over seeds")
    ax_curve.set_title("Fourier head toy", fontsize=10)
    ratios = [{"name": f"{h} / linear KL", "value": mean[h] / mean["linear"]} for h in heads]
    _ratio_bars(ax_ratio, ratios, "ratio to the linear head")


def scaling(report: dict, ax_curve, ax_ratio) -> None:
    key = "num_envs" if report["benchmark"] == "num_envs" else "devices"
    xs = [r[key] for r in report["results"]]
    ys = [r["env_steps_per_second"] for r in report["results"]]
    ax_curve.plot(xs, ys, marker="o")
    ax_ratio.plot(xs, [y / ys[0] for y in ys], marker="o")
    for ax in (ax_curve, ax_ratio):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(key)
    ax_curve.set_yscale("log")
    ax_curve.set_ylabel("env steps/s")
    ax_curve.set_title(f"seqrl PPO on CartPole by {key}", fontsize=10)
    ax_ratio.axhline(1.0, color="black", lw=0.8)
    ax_ratio.set_ylabel(f"ratio to {report['peer']}")
    ax_ratio.set_title("ratio, same run", fontsize=10)


DRAW = {
    "ppo_cartpole": ppo_cartpole,
    "ppo_brax": ppo_cartpole,
    "backbones": backbones,
    "dt_throughput": dt_throughput,
    "fourier_toy": fourier_toy,
    "num_envs": scaling,
    "devices": scaling,
}


def plot(suite: str, report: dict, path: Path) -> Path:
    fig, (ax_curve, ax_ratio) = plt.subplots(1, 2, figsize=(11, 4))
    DRAW[suite](report, ax_curve, ax_ratio)
    _footer(fig, report)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
