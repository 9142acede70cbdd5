"""S5: a multi-input multi-output diagonal state-space layer (Smith, Warrington & Linderman,
"Simplified State Space Layers for Sequence Modeling", ICLR 2023).

Continuous system x' = Lambda x + Btilde u, y = Ctilde x + D u with Lambda the eigenvalues of the
normal part of HiPPO-LegS (diagonalized on the host in float64), discretized per state with a
learnable step Delta = exp(log_step):

    ZOH:       Abar = exp(Lambda Delta),  Bbar = ((Abar - 1) / Lambda) Btilde
    bilinear:  Abar = (1 - Delta Lambda/2)^-1 (1 + Delta Lambda/2),
               Bbar = (1 - Delta Lambda/2)^-1 Delta Btilde

Conjugate symmetry keeps half of the eigenvalues and outputs y = 2 Re(Ctilde x) + D u. ``blocks``
J > 1 tiles a P/J HiPPO J times with a block-diagonal V (every parameter then has P/2 entries,
including log_step). The recurrence runs through :func:`seqrl.scan.resettable_scan`.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from seqrl.scan import resettable_scan


def hippo_legs(n: int) -> np.ndarray:
    """HiPPO-LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)."""
    p = np.sqrt(1 + 2 * np.arange(n, dtype=np.float64))
    return -(np.tril(np.outer(p, p)) - np.diag(np.arange(n, dtype=np.float64)))


def hippo_normal_eig(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the normal part S = A + P P^T (P_n = sqrt(n + 1/2)) of
    HiPPO-LegS: S = -I/2 + skew, so Lambda = -1/2 + i eig(-i S) (a Hermitian eigenproblem)."""
    p = np.sqrt(np.arange(n, dtype=np.float64) + 0.5)
    s = hippo_legs(n) + np.outer(p, p)
    real = np.mean(np.diag(s))
    imag, v = np.linalg.eigh(s * -1j)
    return real + 1j * imag, v


def s5_init(state_size: int, blocks: int, conj_sym: bool = True):
    """(Lambda[P'], V[P, P'], Vinv[P', P]) with P' = P/2 under conjugate symmetry."""
    if state_size % blocks:
        raise ValueError(f"S5 state_size {state_size} must be divisible by blocks {blocks}")
    block = state_size // blocks
    lam, v = hippo_normal_eig(block)
    if conj_sym:
        if block % 2:
            raise ValueError(f"S5 block size {block} must be even with conjugate symmetry")
        lam, v = lam[: block // 2], v[:, : block // 2]
    lam = np.tile(lam, blocks)
    big_v = scipy.linalg.block_diag(*([v] * blocks))
    big_vinv = scipy.linalg.block_diag(*([v.conj().T] * blocks))
    return lam, big_v, big_vinv


def _const(value: np.ndarray):
    return lambda key, shape: jnp.asarray(value, jnp.float32)


class S5(nn.Module):
    """``(carry, x[T, B, H], resets[T, B]) -> (carry, y[T, B, H])``; carry: complex [B, P']."""

    d_model: int
    state_size: int = 64
    blocks: int = 1
    discretization: Literal["zoh", "bilinear"] = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    conj_sym: bool = True

    @property
    def num_states(self) -> int:
        return self.state_size // 2 if self.conj_sym else self.state_size

    def initialize_carry(self, batch: int):
        return jnp.zeros((batch, self.num_states), jnp.complex64)

    def setup(self):
        lam, v, vinv = s5_init(self.state_size, self.blocks, self.conj_sym)
        self.lambda_re = self.param("lambda_re", _const(lam.real), lam.shape)
        self.lambda_im = self.param("lambda_im", _const(lam.imag), lam.shape)

        def b_init(key, shape):  # Btilde = Vinv B with B ~ LeCun normal [P, H]
            b = jax.nn.initializers.lecun_normal()(key, (self.state_size, self.d_model))
            bt = jnp.asarray(vinv, jnp.complex64) @ b.astype(jnp.complex64)
            return jnp.stack([bt.real, bt.imag], -1)

        def c_init(key, shape):  # Ctilde = C V with C ~ complex normal [H, P]
            kr, ki = jax.random.split(key)
            c = jax.random.normal(kr, (self.d_model, self.state_size)) + 1j * jax.random.normal(
                ki, (self.d_model, self.state_size)
            )
            ct = (c / np.sqrt(2 * self.state_size)) @ jnp.asarray(v, jnp.complex64)
            return jnp.stack([ct.real, ct.imag], -1)

        def log_step_init(key, shape):  # vectorized: no Python loop over states
            lo, hi = np.log(self.dt_min), np.log(self.dt_max)
            return jax.random.uniform(key, shape, minval=lo, maxval=hi)

        self.B = self.param("B", b_init, (self.num_states, self.d_model, 2))
        self.C = self.param("C", c_init, (self.d_model, self.num_states, 2))
        self.D = self.param("D", nn.initializers.normal(1.0), (self.d_model,))
        self.log_step = self.param("log_step", log_step_init, (self.num_states,))

    def discretize(self) -> tuple[jax.Array, jax.Array]:
        """(Abar[P'], Bbar[P', H]) as complex arrays (small: computed once per call)."""
        lam_re = jnp.minimum(self.lambda_re, -1e-4) if self.clip_eigs else self.lambda_re
        lam = lam_re + 1j * self.lambda_im
        b = self.B[..., 0] + 1j * self.B[..., 1]
        step = jnp.exp(self.log_step)
        if self.discretization == "zoh":
            a_bar = jnp.exp(lam * step)
            b_bar = ((a_bar - 1) / lam)[:, None] * b
        else:
            inv = 1 / (1 - step * lam / 2)
            a_bar = inv * (1 + step * lam / 2)
            b_bar = (inv * step)[:, None] * b
        return a_bar, b_bar

    def __call__(self, carry, x: jax.Array, resets: jax.Array):
        a_bar, b_bar = self.discretize()
        bu = x.astype(jnp.complex64) @ b_bar.T  # [T, B, P']
        h = resettable_scan(a_bar, bu, resets, carry)
        c = self.C[..., 0] + 1j * self.C[..., 1]
        scale = 2.0 if self.conj_sym else 1.0
        y = scale * (h @ c.T).real + self.D * x
        return h[-1], y
