"""Actor-critic networks with the sequence-layer calling convention.

Every network is called as ``(carry, obs[T, B, ...], resets[T, B]) -> (carry, dist, value)`` so
that one PPO serves feed-forward and recurrent torsos; a feed-forward torso has an empty carry
and ignores ``resets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        return x


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over flattened observations."""

    head: nn.Module
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    is_recurrent = False

    def initialize_carry(self, batch: int) -> Any:
        return ()

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, resets: jax.Array):
        x = obs.reshape(*obs.shape[:2], -1)
        dist = self.head(MLP(self.hidden_sizes, self.activation, name="actor")(x))
        critic = MLP(self.hidden_sizes, self.activation, name="critic")(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic)
        return carry, dist, jnp.squeeze(value, -1)
