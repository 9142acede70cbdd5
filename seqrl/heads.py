"""Action heads: ``features -> distribution`` with ``sample``, ``log_prob``, ``entropy``,
``mode`` and ``aux_loss`` (zero unless the head regularizes itself)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqrl.envs.spaces import Box, Discrete, Space


@struct.dataclass
class Categorical:
    """A categorical distribution over the last axis of ``logits``. ``penalty`` (per sample,
    optional) is a head's regularizer, returned by ``aux_loss`` as its mean; ``coefficients``
    (optional) are the Fourier coefficients ``c[..., N+1]`` of the density the logits were read
    from (Fourier head: ``fourier_density(coefficients, x)`` draws it on [-1, 1], where bin i,
    centred at ``bin_centers(num_bins)[i]``, holds action ``order[i]``)."""

    logits: jax.Array
    penalty: jax.Array | None = None
    coefficients: jax.Array | None = None

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        # a masked sum, not a gather: its gradient is a select that fuses with the softmax's
        # instead of a scatter (three more kernels per step on CPU); where(), not a one-hot
        # product, so -inf logits of other actions stay out of it. An action outside
        # [0, n) has no probability: NaN, which the loop reports, never a silent 0.
        logp = jax.nn.log_softmax(self.logits)
        n = logp.shape[-1]
        action = action.astype(jnp.int32)
        chosen = action[..., None] == jnp.arange(n)
        log_prob = jnp.sum(jnp.where(chosen, logp, 0.0), axis=-1)
        return jnp.where((action >= 0) & (action < n), log_prob, jnp.nan)

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(()) if self.penalty is None else jnp.mean(self.penalty)

    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits)


@struct.dataclass
class DiagGaussian:
    """A Gaussian with diagonal covariance over the last axis."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi), axis=-1)

    def entropy(self) -> jax.Array:
        ent = self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))
        return jnp.sum(jnp.broadcast_to(ent, self.mean.shape), axis=-1)

    def mode(self) -> jax.Array:
        return self.mean

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(())


@struct.dataclass
class TanhGaussian:
    """A Gaussian squashed by tanh and scaled into ``[low, high]`` (log-prob with the
    change-of-variables correction)."""

    mean: jax.Array
    log_std: jax.Array
    low: jax.Array
    high: jax.Array

    def _squash(self, u: jax.Array) -> jax.Array:
        return self.low + (jnp.tanh(u) + 1.0) * 0.5 * (self.high - self.low)

    def sample(self, key: jax.Array) -> jax.Array:
        return self._squash(DiagGaussian(self.mean, self.log_std).sample(key))

    def log_prob(self, action: jax.Array) -> jax.Array:
        y = 2.0 * (action - self.low) / (self.high - self.low) - 1.0
        y = jnp.clip(y, -1.0 + 1e-6, 1.0 - 1e-6)
        u = jnp.arctanh(y)
        log_det = jnp.log(1.0 - y**2 + 1e-6) + jnp.log(0.5 * (self.high - self.low))
        return DiagGaussian(self.mean, self.log_std).log_prob(u) - jnp.sum(log_det, axis=-1)

    def entropy(self) -> jax.Array:
        """The Gaussian's entropy (the squashed one has no closed form; PPO only needs a bonus
        that grows with the spread)."""
        return DiagGaussian(self.mean, self.log_std).entropy()

    def mode(self) -> jax.Array:
        return self._squash(self.mean)

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(())


@struct.dataclass
class Deterministic:
    """A point prediction (Decision Transformer's continuous head, trained with MSE):
    ``log_prob(a) = -||a - mean||^2``, so maximizing it is minimizing the squared error."""

    mean: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean

    def log_prob(self, action: jax.Array) -> jax.Array:
        return -jnp.sum((action - self.mean) ** 2, axis=-1)

    def entropy(self) -> jax.Array:
        return jnp.zeros(self.mean.shape[:-1])

    def mode(self) -> jax.Array:
        return self.mean

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(())


# ---------------------------------------------------------------------------------------------
# Fourier head (Gillman et al., "Fourier Head: Helping Large Language Models Learn Complex
# Probability Distributions", 2024)
# ---------------------------------------------------------------------------------------------


def autocorrelation(b: jax.Array) -> jax.Array:
    """``a_k = sum_j b_{j+k} conj(b_j)`` for k = 0..N, over the last axis of complex
    ``b[..., N+1]``."""
    n = b.shape[-1]
    return jnp.stack(
        [jnp.sum(b[..., k:] * jnp.conj(b[..., : n - k]), axis=-1) for k in range(n)], axis=-1
    )


def fourier_density(c: jax.Array, x: jax.Array) -> jax.Array:
    """``p(x) = 1/2 + Re sum_{k>=1} c_k exp(i pi k x)`` on [-1, 1] with ``c = a / a_0``.

    Equal to ``|sum_j b_j exp(i pi j x)|^2 / (2 sum_j |b_j|^2)``: non-negative, integrates to 1.
    ``c[..., N+1]`` broadcasts against ``x[..., M]`` (one density per leading index).
    """
    k = jnp.arange(1, c.shape[-1])
    phase = jnp.exp(1j * jnp.pi * k * x[..., None])  # [..., M, N]
    return 0.5 + jnp.real(jnp.sum(c[..., None, 1:] * phase, axis=-1))


def fourier_cdf(c: jax.Array, x: jax.Array) -> jax.Array:
    """``F(x) = (x + 1)/2 + Re sum_k c_k (exp(i pi k x) - (-1)^k) / (i pi k)``:
    F(-1) = 0, F(1) = 1."""
    k = jnp.arange(1, c.shape[-1])
    terms = (jnp.exp(1j * jnp.pi * k * x[..., None]) - (-1.0) ** k) / (1j * jnp.pi * k)
    return (x + 1.0) / 2.0 + jnp.real(jnp.sum(c[..., None, 1:] * terms, axis=-1))


def fourier_sample(c: jax.Array, key: jax.Array, iterations: int = 30) -> jax.Array:
    """Samples of the density by inverse-CDF bisection (one per leading index of ``c``)."""
    u = jax.random.uniform(key, c.shape[:-1])
    lo, hi = -jnp.ones_like(u), jnp.ones_like(u)

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        below = fourier_cdf(c, mid[..., None])[..., 0] < u
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, halve, (lo, hi))
    return (lo + hi) / 2


def bin_centers(num_bins: int) -> np.ndarray:
    """``c_l = -1 + (2 l + 1) / m``: the centres of m equal bins of [-1, 1]."""
    return -1.0 + (2.0 * np.arange(num_bins) + 1.0) / num_bins


@struct.dataclass
class Binned:
    """Per-dimension categorical distributions over equal bins of ``[low, high]`` (continuous
    actions through a discretizing head such as the Fourier head). Decodes at the bin centre, or
    uniformly inside the bin with ``within_bin`` (then ``log_prob`` includes -log(bin width)).
    ``coefficients[..., D, N+1]`` (Fourier head): the density behind the bins, on [-1, 1] (the
    action range maps onto [-margin, margin] there)."""

    logits: jax.Array  # [..., D, m]
    low: jax.Array
    high: jax.Array
    within_bin: bool = struct.field(pytree_node=False, default=False)
    penalty: jax.Array | None = None
    coefficients: jax.Array | None = None

    @property
    def _width(self) -> jax.Array:
        return (self.high - self.low) / self.logits.shape[-1]

    def _value(self, index: jax.Array, offset: jax.Array | float = 0.5) -> jax.Array:
        return self.low + (index + offset) * self._width

    def sample(self, key: jax.Array) -> jax.Array:
        k_bin, k_off = jax.random.split(key)
        index = jax.random.categorical(k_bin, self.logits)
        offset = jax.random.uniform(k_off, index.shape) if self.within_bin else 0.5
        return self._value(index, offset)

    def bin_index(self, action: jax.Array) -> jax.Array:
        m = self.logits.shape[-1]
        return jnp.clip(jnp.floor((action - self.low) / self._width), 0, m - 1).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        index = self.bin_index(action)
        per_dim = jnp.take_along_axis(logp, index[..., None], axis=-1)[..., 0]
        if self.within_bin:
            per_dim = per_dim - jnp.log(self._width)
        return jnp.sum(per_dim, axis=-1)

    def entropy(self) -> jax.Array:
        return jnp.sum(Categorical(self.logits).entropy(), axis=-1)

    def mode(self) -> jax.Array:
        return self._value(jnp.argmax(self.logits, axis=-1))

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(()) if self.penalty is None else jnp.mean(self.penalty)


class FourierHead(nn.Module):
    """Features -> a smooth density on [-1, 1] per action dimension, read out on ``num_bins``
    bin centres (Gillman et al. 2024).

    A linear layer (weights and bias initialized small: /100) gives 2 (N + 1) reals per dimension
    -> complex ``b_0..b_N``; ``a_k = sum_j b_{j+k} conj(b_j)`` and ``c = a / a_0`` define
    ``p(x) = 1/2 + Re sum_k c_k exp(i pi k x)`` (non-negative, integral 1);
    ``pmf_l = p(c_l) / sum p(c)`` over the bin centres; logits = log(pmf + 1e-5).

    Regularizer (returned by ``aux_loss``): ``regularization * 2 * sum_k 2 pi^2 k^2 |c_k|^2``
    per sample, averaged over the batch. The paper's code applies it to the unnormalized
    ``a_k``; we apply it to ``c_k = a_k / a_0``, which makes it invariant to the scale of ``b``
    (that scale does not change the density) and so penalizes only roughness.

    Discrete actions: ``num_bins`` = number of actions and ``order`` (optional) lists the
    actions in bin order, so that neighbouring bins are similar actions. Continuous actions:
    each dimension's ``[low, high]`` maps onto ``[-0.9, 0.9]`` (the density wraps around at +-1,
    so the margins keep the two ends of the action range apart).
    """

    num_bins: int
    num_frequencies: int = 8
    action_dim: int | None = None  # None: one discrete action; else continuous dimensions
    low: float | tuple = -1.0
    high: float | tuple = 1.0
    order: tuple[int, ...] | None = None
    regularization: float = 1e-6
    within_bin: bool = False
    margin: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array):
        dims = 1 if self.action_dim is None else self.action_dim
        n = self.num_frequencies + 1

        def small(init):
            return lambda *a: init(*a) / 100.0

        raw = nn.Dense(
            dims * 2 * n,
            kernel_init=small(nn.initializers.lecun_normal()),
            bias_init=small(nn.initializers.normal(1.0)),
        )(x)
        raw = raw.reshape(*x.shape[:-1], dims, n, 2)
        b = raw[..., 0] + 1j * raw[..., 1]
        a = autocorrelation(b)
        c = a / jnp.real(a[..., :1])
        if self.action_dim is None:  # a discrete action: bins span [-1, 1]
            centers = bin_centers(self.num_bins)
        else:  # continuous: the action range maps onto [-margin, margin]
            centers = self.margin * bin_centers(self.num_bins)
        density = fourier_density(c, jnp.asarray(centers, jnp.float32))  # [..., D, m]
        pmf = density / jnp.sum(density, axis=-1, keepdims=True)
        logits = jnp.log(pmf + 1e-5)
        k = jnp.arange(n)
        roughness = jnp.sum(2 * jnp.pi**2 * k**2 * jnp.abs(c) ** 2, axis=(-1, -2))
        penalty = self.regularization * 2.0 * roughness
        if self.action_dim is None:
            logits = logits[..., 0, :]
            if self.order is not None:  # bin i holds action order[i]
                logits = logits[..., np.argsort(np.asarray(self.order))]
            return Categorical(logits, penalty, c[..., 0, :])
        low = jnp.broadcast_to(jnp.asarray(self.low, jnp.float32), (dims,))
        high = jnp.broadcast_to(jnp.asarray(self.high, jnp.float32), (dims,))
        return Binned(logits, low, high, self.within_bin, penalty, c)


class CategoricalHead(nn.Module):
    """Logits from a linear layer (small init so the first policy is near uniform)."""

    num_actions: int

    @nn.compact
    def __call__(self, x: jax.Array) -> Categorical:
        init = nn.initializers.orthogonal(0.01)
        return Categorical(nn.Dense(self.num_actions, kernel_init=init)(x))


class GaussianHead(nn.Module):
    """State-dependent mean, state-independent learned log-std (PPO's usual choice)."""

    action_dim: int
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array) -> DiagGaussian:
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return DiagGaussian(mean, jnp.broadcast_to(log_std, mean.shape))


class TanhGaussianHead(nn.Module):
    action_dim: int
    low: tuple
    high: tuple

    @nn.compact
    def __call__(self, x: jax.Array) -> TanhGaussian:
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))(x)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        low = jnp.asarray(self.low, jnp.float32)
        high = jnp.asarray(self.high, jnp.float32)
        return TanhGaussian(mean, jnp.broadcast_to(log_std, mean.shape), low, high)


class DeterministicHead(nn.Module):
    """tanh(linear) scaled into the action range."""

    action_dim: int
    low: tuple
    high: tuple

    @nn.compact
    def __call__(self, x: jax.Array) -> Deterministic:
        y = jnp.tanh(nn.Dense(self.action_dim)(x))
        low, high = jnp.asarray(self.low), jnp.asarray(self.high)
        return Deterministic(low + (y + 1.0) * 0.5 * (high - low))


HEADS = ("auto", "categorical", "gaussian", "tanh_gaussian", "deterministic", "fourier")


def head_for(
    space: Space,
    kind: str = "auto",
    *,
    continuous: str = "gaussian",
    fourier_frequencies: int = 8,
    fourier_bins: int = 64,
    action_order: tuple[int, ...] | None = None,
) -> nn.Module:
    """The action head ``kind`` for an action space. ``auto`` means the same for every agent:
    categorical for discrete actions, the agent's ``continuous`` default for continuous ones
    (PPO: ``gaussian``; the DT: ``deterministic``)."""
    if kind == "auto":
        kind = "categorical" if isinstance(space, Discrete) else continuous
    if isinstance(space, Discrete):
        if kind == "categorical":
            return CategoricalHead(space.n)
        if kind == "fourier":
            return FourierHead(space.n, fourier_frequencies, order=action_order)
        raise ValueError(f"head {kind!r} needs continuous actions, the env's are {space!r}")
    if not isinstance(space, Box):
        raise TypeError(f"no action head for {space!r}")
    dim = int(np.prod(space.shape))
    low = tuple(float(v) for v in np.broadcast_to(space.low, space.shape).reshape(-1))
    high = tuple(float(v) for v in np.broadcast_to(space.high, space.shape).reshape(-1))
    if kind == "gaussian":
        return GaussianHead(dim)
    if kind == "tanh_gaussian":
        return TanhGaussianHead(dim, low, high)
    if kind == "deterministic":
        return DeterministicHead(dim, low, high)
    if kind == "fourier":
        return FourierHead(fourier_bins, fourier_frequencies, action_dim=dim, low=low, high=high)
    raise ValueError(f"head {kind!r} needs discrete actions, the env's are {space!r}")
