"""Observation and action spaces (static descriptions: shapes, dtypes, bounds)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Discrete:
    """`n` actions labelled 0..n-1 (int32 scalars)."""

    n: int
    shape: tuple[int, ...] = ()
    dtype: np.dtype = np.dtype(np.int32)

    def __repr__(self) -> str:
        return f"Discrete({self.n})"

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        return jnp.logical_and(x >= 0, x < self.n)


@dataclasses.dataclass(frozen=True)
class Box:
    """An array of `shape` with elementwise bounds `low`/`high` (may be +-inf)."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float32)

    @classmethod
    def make(cls, low, high, shape, dtype=np.float32) -> Box:
        """Broadcasts the bounds to ``shape``. Bounds that depend on traced env params (inside
        jit) stay jax arrays; the space is then only usable inside that trace."""
        shape = tuple(int(s) for s in shape)
        if isinstance(low, jax.core.Tracer) or isinstance(high, jax.core.Tracer):
            low = jnp.broadcast_to(jnp.asarray(low, jnp.float32), shape)
            high = jnp.broadcast_to(jnp.asarray(high, jnp.float32), shape)
        else:
            low = np.broadcast_to(np.asarray(low, dtype=np.float32), shape).copy()
            high = np.broadcast_to(np.asarray(high, dtype=np.float32), shape).copy()
        return cls(low=low, high=high, shape=shape, dtype=np.dtype(dtype))

    def sample(self, key: jax.Array) -> jax.Array:
        low = jnp.where(jnp.isfinite(self.low), self.low, -1.0)
        high = jnp.where(jnp.isfinite(self.high), self.high, 1.0)
        return jax.random.uniform(key, self.shape, minval=low, maxval=high).astype(self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        return jnp.logical_and(jnp.all(x >= self.low), jnp.all(x <= self.high))

    def __repr__(self) -> str:
        def bound(v):
            v = np.asarray(v)
            return f"{float(v.flat[0]):g}" if v.size and np.all(v == v.flat[0]) else "..."

        return f"Box({bound(self.low)}, {bound(self.high)}, shape={self.shape})"

    def __hash__(self) -> int:  # arrays are not hashable; spaces are static metadata
        return hash((self.shape, self.dtype, self.low.tobytes(), self.high.tobytes()))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Box)
            and self.shape == other.shape
            and self.dtype == other.dtype
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
        )


Space = Discrete | Box
