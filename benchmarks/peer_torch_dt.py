"""A PyTorch Decision Transformer of seqrl's size and architecture, trained the usual PyTorch way.

Run by :mod:`benchmarks.dt_throughput` in ``.venv-sb3`` (torch CPU build) with
``torch.set_num_threads(1)`` unless ``--threads`` says otherwise. Written for this benchmark
to mirror ``seqrl.agents.dt`` layer for layer, so that both peers train the same network:

- tokens (R^, s, a) per step: ``Linear(1)``, ``Linear(obs_dim)``, ``Linear(act_dim)`` (discrete:
  an ``Embedding`` of the actions), plus a learned timestep ``Embedding(1000)`` added to all
  three; LayerNorm; dropout; no positional embedding;
- GPT-2-style pre-LayerNorm blocks: causal self-attention (q, k, v and output projections with
  biases, dropout on the attention weights and on the residual branch), a 4x MLP with GELU
  (tanh approximation, as in GPT-2 and flax's ``nn.gelu``), dropout on the residual branch;
- a final LayerNorm, the action read from each state token: ``tanh(Linear)`` trained with the
  squared error summed over action dimensions (continuous), or logits trained with cross
  entropy (discrete); both averaged over the unmasked steps.

TRAIN: AdamW (lr 1e-4 after a linear warm-up, weight decay 1e-4), gradients clipped to global
norm 0.25. Batches are drawn on the host with numpy the way the official DT's ``get_batch``
does: trajectories in proportion to their length, a uniform start, up to K steps, left-padded
with zeros and a mask. Two things are done once up front instead of in every batch (both
help PyTorch): states are normalized and returns-to-go computed for the whole dataset (the
official code runs a Python-loop ``discount_cumsum`` over the rest of the trajectory for every
sampled window).

CHECK (``--check``): seqrl's worker exports its initial parameters, one batch and its outputs;
loaded into this model they must give the same outputs (the largest difference is recorded),
which shows the two are the same function, not only the same size.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mb, timed_imports, torch_threads, write_result

LAYER_NORM_EPS = 1e-6  # flax's LayerNorm epsilon, as in seqrl


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the benchmark's .npz dataset")
    p.add_argument("--head", choices=("deterministic", "categorical"), default="deterministic")
    p.add_argument("--updates", type=int, required=True, help="timed updates")
    p.add_argument("--warmup-updates", type=int, default=10, help="untimed updates first")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--num-heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=10_000, help="learning-rate warm-up")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=0.25)
    p.add_argument("--return-scale", type=float, default=1000.0)
    p.add_argument("--max-timestep", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True, help="file for the JSON result line")
    p.add_argument(
        "--check",
        type=Path,
        help="seqrl's exported parameters, batch and outputs (.npz): load "
        "them into this model and record the largest difference of the outputs",
    )
    return p.parse_args()


def import_libraries() -> None:
    """numpy and torch, imported once, on the import clock; the functions below import them
    again from the module cache."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    from torch.nn import functional  # noqa: F401


@functools.cache
def layer_classes() -> tuple[type, type]:
    """``(CausalSelfAttention, Block)``: the GPT-2-style layers, defined once torch is imported
    (imports are timed)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    eps = LAYER_NORM_EPS

    class CausalSelfAttention(nn.Module):
        def __init__(self, d: int, heads: int, dropout: float):
            super().__init__()
            self.heads, self.dropout = heads, dropout
            self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.out = nn.Linear(d, d)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape

            def split(y):
                return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
            return self.out(y.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        """A pre-LayerNorm GPT block."""

        def __init__(self, d: int, heads: int, dropout: float):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
            self.attn = CausalSelfAttention(d, heads, dropout)
            self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            x = x + self.drop(self.attn(self.ln1(x), bias))
            h = self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
            return x + self.drop(h)

    return CausalSelfAttention, Block


@functools.cache
def model_class() -> type:
    """The ``DecisionTransformer`` module class, defined once torch is imported."""
    import torch
    from torch import nn

    eps = LAYER_NORM_EPS
    _, Block = layer_classes()

    class DecisionTransformer(nn.Module):
        def __init__(self, args: argparse.Namespace, obs_dim: int, act_dim: int, num_actions):
            super().__init__()
            d = args.embed_dim
            self.embed_dim, self.max_timestep = d, args.max_timestep
            self.discrete = num_actions is not None
            self.embed_timestep = nn.Embedding(args.max_timestep, d)
            self.embed_return = nn.Linear(1, d)
            self.embed_state = nn.Linear(obs_dim, d)
            if num_actions is None:
                self.embed_action = nn.Linear(act_dim, d)
            else:
                self.embed_action = nn.Embedding(num_actions, d)
            self.embed_norm = nn.LayerNorm(d, eps=eps)
            self.drop = nn.Dropout(args.dropout)
            self.blocks = nn.ModuleList(
                Block(d, args.num_heads, args.dropout) for _ in range(args.num_layers)
            )
            self.final_norm = nn.LayerNorm(d, eps=eps)
            self.predict_action = nn.Linear(d, act_dim if num_actions is None else num_actions)
            tokens = 3 * args.context
            causal = torch.tril(torch.ones(tokens, tokens, dtype=torch.bool))
            self.register_buffer("causal", causal, persistent=False)

        def forward(self, rtg, obs, actions, timesteps, mask):
            b, k = rtg.shape
            d = self.embed_dim
            time_ = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
            r = self.embed_return(rtg.unsqueeze(-1)) + time_
            s = self.embed_state(obs) + time_
            a = self.embed_action(actions) + time_
            x = torch.stack([r, s, a], dim=2).reshape(b, 3 * k, d)
            x = self.drop(self.embed_norm(x))
            # additive mask: causal AND the key is a real step (a padded query then attends
            # uniformly over padding, as in flax, instead of producing NaN)
            keep = self.causal[None, None] & mask.repeat_interleave(3, dim=1)[:, None, None, :]
            bias = torch.zeros(keep.shape, dtype=x.dtype).masked_fill_(~keep, -1e9)
            for block in self.blocks:
                x = block(x, bias)
            state_tokens = self.final_norm(x).reshape(b, k, 3, d)[:, :, 1]
            out = self.predict_action(state_tokens)
            return out if self.discrete else torch.tanh(out)

    return DecisionTransformer


def build(args: argparse.Namespace, obs_dim: int, act_dim: int, num_actions: int | None):
    """The model (its classes are defined after ``torch`` is imported: imports are timed)."""
    return model_class()(args, obs_dim, act_dim, num_actions)


def seqrl_state_dict(arrays: dict, num_layers: int, discrete: bool) -> dict:
    """seqrl's flax parameters (``param:<path>`` arrays) under this model's names: dense
    kernels are [in, out] in flax and [out, in] in PyTorch; attention kernels carry a head axis."""

    def p(name):
        return arrays["param:" + name]

    out = {"embed_timestep.weight": p("embed_timestep/embedding")}
    pairs = [("embed_return", "embed_return"), ("embed_state", "embed_state")]
    pairs += [("predict_action", "head/Dense_0")]
    if discrete:
        out["embed_action.weight"] = p("embed_action/embedding")
    else:
        pairs.append(("embed_action", "embed_action"))
    for norm in ("embed_norm", "final_norm"):
        out[f"{norm}.weight"], out[f"{norm}.bias"] = p(f"{norm}/scale"), p(f"{norm}/bias")
    for i in range(num_layers):
        src, dst = f"block_{i}/", f"blocks.{i}."
        for j, ln in enumerate(("ln1", "ln2")):
            out[f"{dst}{ln}.weight"] = p(f"{src}LayerNorm_{j}/scale")
            out[f"{dst}{ln}.bias"] = p(f"{src}LayerNorm_{j}/bias")
        for name in ("query", "key", "value", "out"):
            pairs.append((f"{dst}attn.{name}", f"{src}MultiHeadDotProductAttention_0/{name}"))
        pairs += [(f"{dst}fc", f"{src}Dense_0"), (f"{dst}proj", f"{src}Dense_1")]
    for name, src in pairs:
        kernel = p(f"{src}/kernel")
        if src.endswith("/out"):  # [heads, head_dim, d] -> [heads * head_dim, d]
            kernel = kernel.reshape(-1, kernel.shape[-1])
        out[f"{name}.weight"] = kernel.reshape(kernel.shape[0], -1).T
        out[f"{name}.bias"] = p(f"{src}/bias").reshape(-1)
    return out


def compare_with_seqrl(args: argparse.Namespace, model, discrete: bool) -> float:
    """Largest |difference| between this model's outputs and seqrl's, on seqrl's batch and
    parameters, over the real (unmasked) steps; dropout off."""
    import numpy as np
    import torch

    arrays = dict(np.load(args.check))
    state = seqrl_state_dict(arrays, args.num_layers, discrete)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    model.eval()
    b = {k.split(":", 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k[:6] == "batch:"}
    actions = b["actions"].long() if discrete else b["actions"]
    with torch.no_grad():
        out = model(b["rtg"], b["obs"], actions, b["timesteps"].long(), b["mask"] > 0).numpy()
    real = arrays["batch:mask"] > 0
    return float(np.abs(out - arrays["output"])[real].max())


def load_trajectories(args: argparse.Namespace, discrete: bool) -> tuple[list[dict], Any, tuple]:
    """DATA: the dataset as a list of trajectories (the official DT's layout), states
    normalized and returns-to-go computed once up front; the sampling probabilities (in
    proportion to length) and ``(obs_dim, act_dim, num_actions or None)``."""
    import numpy as np

    raw = np.load(args.data)
    lengths = raw["lengths"]
    valid = np.arange(raw["obs"].shape[1])[None, :] < lengths[:, None]
    flat = raw["obs"][valid]
    mean, std = flat.mean(0), flat.std(0) + 1e-6
    actions_all = raw["actions_discrete"] if discrete else raw["actions"]
    trajectories = []
    for n, length in enumerate(lengths):
        rewards = raw["rewards"][n, :length]
        trajectories.append(
            {
                "obs": ((raw["obs"][n, :length] - mean) / std).astype(np.float32),
                "actions": actions_all[n, :length],
                "rtg": (np.cumsum(rewards[::-1])[::-1] / args.return_scale).astype(np.float32),
            }
        )
    p_sample = lengths / lengths.sum()
    num_actions = int(raw["num_actions"]) if discrete else None
    return trajectories, p_sample, (raw["obs"].shape[2], raw["actions"].shape[2], num_actions)


def batch_sampler(trajectories, p_sample, k: int, batch_size: int, rng, discrete: bool):
    """``get_batch()``, the official DT's way: trajectories in proportion to their length, a
    uniform start, up to ``k`` steps, left-padded with zeros and a mask; as torch tensors."""
    import numpy as np
    import torch

    def left_pad(x: np.ndarray, pad: int) -> np.ndarray:
        return np.concatenate([np.zeros((pad, *x.shape[1:]), x.dtype), x])

    def get_batch():
        index = rng.choice(len(trajectories), size=batch_size, p=p_sample)
        s, a, r, t, m = [], [], [], [], []
        for i in index:
            traj = trajectories[i]
            start = rng.integers(0, len(traj["obs"]))
            steps = min(k, len(traj["obs"]) - start)
            pad = k - steps
            s.append(left_pad(traj["obs"][start : start + k], pad))
            a.append(left_pad(traj["actions"][start : start + k], pad))
            r.append(left_pad(traj["rtg"][start : start + k], pad))
            t.append(left_pad(np.arange(start, start + steps), pad))
            m.append(left_pad(np.ones(steps, bool), pad))
        return (
            torch.from_numpy(np.stack(r)),
            torch.from_numpy(np.stack(s)),
            torch.from_numpy(np.stack(a).astype(np.int64 if discrete else np.float32)),
            torch.from_numpy(np.stack(t)),
            torch.from_numpy(np.stack(m)),
        )

    return get_batch


def make_optimizer(model: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """AdamW with weight decay, and a linear learning-rate warm-up."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(args.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda u: min(u / warmup, 1.0))
    return optimizer, scheduler


def make_update(model, optimizer, scheduler, get_batch, discrete: bool, grad_clip: float):
    """``update()``: one training step on a fresh batch; returns (loss, seconds spent sampling
    the batch). The loss is averaged over the unmasked steps; gradients are clipped."""
    import torch
    from torch.nn import functional as F

    def update() -> tuple[float, float]:
        """One training step; returns (loss, seconds spent sampling the batch)."""
        t0 = time.perf_counter()
        rtg, obs, actions, timesteps, mask = get_batch()
        t1 = time.perf_counter()
        pred = model(rtg, obs, actions, timesteps, mask)
        maskf = mask.float()
        if discrete:
            per_step = F.cross_entropy(pred.transpose(1, 2), actions, reduction="none")
        else:
            per_step = ((pred - actions) ** 2).sum(-1)
        loss = (per_step * maskf).sum() / maskf.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        return loss.item(), t1 - t0

    return update


def time_updates(update: Callable, warmup_updates: int, updates: int) -> tuple[float, float, list]:
    """WARM UP (first-call allocations), then TIME: ``(train seconds, of them sampling, the
    timed updates' losses)``."""
    for _ in range(warmup_updates):
        update()
    sample_seconds, losses = 0.0, []
    t0 = time.perf_counter()
    for _ in range(updates):
        loss, sampled = update()
        sample_seconds += sampled
        losses.append(loss)
    return time.perf_counter() - t0, sample_seconds, losses


def param_counts(model: Any) -> dict:
    """The model's parameter count, in all and per top-level module."""
    return {
        "param_count": sum(p.numel() for p in model.parameters()),
        "param_breakdown": {
            name: sum(p.numel() for p in child.parameters())
            for name, child in model.named_children()
        },
    }


def main() -> None:
    args = parse_args()
    _, import_seconds = timed_imports(import_libraries)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    discrete = args.head == "categorical"
    trajectories, p_sample, dims = load_trajectories(args, discrete)
    get_batch = batch_sampler(trajectories, p_sample, args.context, args.batch_size, rng, discrete)

    # MODEL and optimizer
    model = build(args, *dims)
    counts = param_counts(model)
    optimizer, scheduler = make_optimizer(model, args)
    model.train()
    check = None
    if args.check:
        check = compare_with_seqrl(args, build(args, *dims), discrete)
    update = make_update(model, optimizer, scheduler, get_batch, discrete, args.grad_clip)
    train_seconds, sample_seconds, losses = time_updates(update, args.warmup_updates, args.updates)

    samples = args.updates * args.batch_size
    write_result(
        args.out,
        {
            "peer": "torch",
            "head": args.head,
            "updates": args.updates,
            "warmup_updates": args.warmup_updates,
            "samples": samples,
            "train_seconds": round(train_seconds, 3),
            "samples_per_second": round(samples / train_seconds, 1),
            "sample_seconds": round(sample_seconds, 3),
            "samples_per_second_without_sampling": round(
                samples / (train_seconds - sample_seconds), 1
            ),
            "loss_first_timed": losses[0],
            "loss_last_timed": losses[-1],
            **counts,
            "max_abs_diff_vs_seqrl": check,
            "import_seconds": round(import_seconds, 2),
            "peak_rss_mb": peak_rss_mb(),
            "threads": torch_threads(torch),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "torch_config": {
                "mkldnn": torch.backends.mkldnn.is_available(),
                "mkl": torch.backends.mkl.is_available(),
            },
        },
    )


if __name__ == "__main__":
    main()
