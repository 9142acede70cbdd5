"""S4D: H independent single-input single-output diagonal SSMs (Gu, Gupta, Goel & Re, "On the
Parameterization and Initialization of Diagonal State Space Models", NeurIPS 2022).

Per channel h, N/2 complex modes A = -exp(log_A_real) + i A_imag (real part initialised at 1/2):

    S4D-Lin:  A_imag[n] = pi n        S4D-Inv:  A_imag[n] = (N/pi)(N/(2n+1) - 1)

step dt_h = exp(log_dt_h) ~ exp U[log dt_min, log dt_max]; ZOH with B = 1:
dA = exp(dt A), dB = (dA - 1)/A; x' = dA x + dB u; y = 2 Re(sum_n C x') + D u.
Diagonal, so it runs through the same :func:`seqrl.scan.resettable_scan` as S5.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqrl.scan import resettable_scan


def s4d_imag(n_modes: int, state_size: int, kind: str) -> np.ndarray:
    n = np.arange(n_modes, dtype=np.float64)
    if kind == "lin":
        return np.pi * n
    return (state_size / np.pi) * (state_size / (2 * n + 1) - 1)


class S4D(nn.Module):
    """``(carry, x[T, B, H], resets[T, B]) -> (carry, y[T, B, H])``; carry: complex [B, H, N/2]."""

    d_model: int
    state_size: int = 64
    init_kind: Literal["lin", "inv"] = "lin"
    dt_min: float = 1e-3
    dt_max: float = 1e-1

    def initialize_carry(self, batch: int):
        return jnp.zeros((batch, self.d_model, self.state_size // 2), jnp.complex64)

    @nn.compact
    def __call__(self, carry, x: jax.Array, resets: jax.Array):
        h, n = self.d_model, self.state_size // 2
        imag = s4d_imag(n, self.state_size, self.init_kind)
        log_a_real = self.param(
            "log_A_real", lambda k, s: jnp.full(s, np.log(0.5), jnp.float32), (h, n)
        )
        a_imag = self.param(
            "A_imag", lambda k, s: jnp.broadcast_to(jnp.asarray(imag, jnp.float32), s), (h, n)
        )
        log_dt = self.param(
            "log_dt",
            lambda k, s: jax.random.uniform(
                k, s, minval=np.log(self.dt_min), maxval=np.log(self.dt_max)
            ),
            (h,),
        )
        c = self.param("C", nn.initializers.normal(np.sqrt(0.5)), (h, n, 2))
        d = self.param("D", nn.initializers.normal(1.0), (h,))
        a = -jnp.exp(log_a_real) + 1j * a_imag
        da = jnp.exp(jnp.exp(log_dt)[:, None] * a)
        db = (da - 1) / a
        u = x[..., None]  # [T, B, H, 1]
        states = resettable_scan(da, u * db, resets, carry)  # [T, B, H, N/2]
        c = c[..., 0] + 1j * c[..., 1]
        y = 2 * jnp.sum(states * c, axis=-1).real + d * x
        return states[-1], y
