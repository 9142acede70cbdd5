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
    """A categorical distribution over the last axis of ``logits``."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)

    def aux_loss(self) -> jax.Array:
        return jnp.zeros(())


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


def head_for(space: Space) -> nn.Module:
    """The default head for an action space."""
    if isinstance(space, Discrete):
        return CategoricalHead(space.n)
    if isinstance(space, Box):
        return GaussianHead(int(np.prod(space.shape)))
    raise TypeError(f"no action head for {space!r}")
