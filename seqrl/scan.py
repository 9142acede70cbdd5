"""The resettable associative scan: diagonal linear recurrences with episode resets, in parallel.

Recurrence (state zeroed BEFORE x_t is consumed where ``reset_t = 1``)::

    h_t = (1 - reset_t) * a_t * h_{t-1} + b_t

Scan elements ``e_t = (a_t, b_t, reset_t)`` combine with (i before j)::

    (a_i, b_i, c_i) . (a_j, b_j, c_j) = (c_j ? a_j : a_j a_i,
                                         c_j ? b_j : a_j b_i + b_j,
                                         c_i | c_j)

A reset at j discards the whole prefix, which keeps the operator associative (S5, Smith et al.
2023; popjaxrl, Lu et al. 2023). The carried state enters by folding it into the first element.

Complex recurrences (S5, S4D) are handled as (real, imaginary) pairs of real arrays: XLA compiles
an associative scan over complex numbers far more slowly than over reals on CPU (jax#18221),
and the pairs keep the traced program small.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Complex = tuple[jax.Array, jax.Array]  # (real, imaginary)


def _cmul(x: Complex, y: Complex) -> Complex:
    return x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0]


def resettable_scan(a: Complex, b: Complex, resets: jax.Array, h0: Complex) -> Complex:
    """All states ``h[T, ...]`` of ``h_t = (1 - reset_t) a_t h_{t-1} + b_t`` from ``h_{-1} = h0``.

    ``a`` and ``b`` are (re, im) pairs shaped ``[T, B, ...]`` (``a`` may broadcast against ``b``);
    ``resets`` is ``[T, B]`` (true where x_t starts an episode); ``h0`` is ``[B, ...]``. For a
    real recurrence pass zeros as the imaginary parts. The last state is the next carry.
    """
    shape = b[0].shape
    a = (jnp.broadcast_to(a[0], shape), jnp.broadcast_to(a[1], shape))
    c = jnp.broadcast_to(resets.reshape(resets.shape + (1,) * (len(shape) - resets.ndim)), shape)
    keep = 1.0 - c[0].astype(b[0].dtype)
    # fold the carried state into the first element: b_0 <- b_0 + (1 - reset_0) a_0 h0
    ah0 = _cmul((a[0][0], a[1][0]), h0)
    b = (b[0].at[0].add(keep * ah0[0]), b[1].at[0].add(keep * ah0[1]))

    def combine(left, right):
        a_i, b_i, c_i = left
        a_j, b_j, c_j = right
        a_ji = _cmul(a_j, a_i)
        ab = _cmul(a_j, b_i)
        a_out = (jnp.where(c_j, a_j[0], a_ji[0]), jnp.where(c_j, a_j[1], a_ji[1]))
        b_out = (jnp.where(c_j, b_j[0], ab[0] + b_j[0]), jnp.where(c_j, b_j[1], ab[1] + b_j[1]))
        return a_out, b_out, jnp.logical_or(c_i, c_j)

    _, h, _ = jax.lax.associative_scan(combine, (a, b, c.astype(jnp.bool_)), axis=0)
    return h


def sequential_scan(a: Complex, b: Complex, resets: jax.Array, h0: Complex) -> Complex:
    """The same recurrence step by step with ``lax.scan`` (the reference for tests)."""
    shape = b[0].shape
    a = (jnp.broadcast_to(a[0], shape), jnp.broadcast_to(a[1], shape))
    r = resets.reshape(resets.shape + (1,) * (len(shape) - resets.ndim)).astype(b[0].dtype)

    def step(h, x):
        a_t, b_t, r_t = x
        ah = _cmul(a_t, h)
        h = ((1 - r_t) * ah[0] + b_t[0], (1 - r_t) * ah[1] + b_t[1])
        return h, h

    _, hs = jax.lax.scan(step, h0, (a, b, r))
    return hs
