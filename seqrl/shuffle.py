"""Random permutations that XLA:CPU sorts quickly (PPO shuffles its rollout every epoch)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``range(n)`` (int32), like ``jax.random.permutation``.

    ``jax.random.permutation`` sorts the indices by random keys: a two-operand sort, which
    XLA:CPU runs through a generic comparator. Here each index is packed into the low bits of
    its random key, so one single-operand sort of ``uint32`` does the same, several times
    faster (docs/benchmarks.md), and the low bits read the permutation back. Keys keep
    ``32 - ceil(log2 n)`` random bits, so (as JAX does with its 32-bit keys) the sort is
    repeated on fresh keys, composing the permutations, until every index has drawn
    ``3 log2 n`` random bits: a tie (which keeps the previous order) then has probability about
    ``1 / n``. Beyond 2**24 items too few bits are left: ``jax.random.permutation`` does the
    work.
    """
    width = max(1, (n - 1).bit_length())  # bits for an index
    if width > 24:
        return jax.random.permutation(key, n)
    free = 32 - width
    rounds = math.ceil(3 * width / free)
    mask = jnp.uint32((1 << width) - 1)
    index = jnp.arange(n, dtype=jnp.uint32)
    perm = index
    for k in jax.random.split(key, rounds):
        packed = (jax.random.bits(k, (n,), jnp.uint32) & ~mask) | index
        perm = perm[jnp.sort(packed) & mask]
    return perm.astype(jnp.int32)
