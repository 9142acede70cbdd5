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


class RecurrentActorCritic(nn.Module):
    """A sequence-model torso (``seqrl.sequence.SequenceStack``) shared by actor and critic MLP
    heads. Acting is the same call with T = 1."""

    head: nn.Module
    stack: nn.Module
    hidden_sizes: Sequence[int] = (64,)
    activation: str = "tanh"

    is_recurrent = True

    def initialize_carry(self, batch: int) -> Any:
        return self.stack.initialize_carry(batch)

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, resets: jax.Array):
        x = obs.reshape(*obs.shape[:2], -1)
        carry, features = self.stack(carry, x, resets)
        dist = self.head(MLP(self.hidden_sizes, self.activation, name="actor")(features))
        critic = MLP(self.hidden_sizes, self.activation, name="critic")(features)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic)
        return carry, dist, jnp.squeeze(value, -1)


def make_actor_critic(net, head: nn.Module) -> nn.Module:
    """The network a ``NetworkConfig`` describes, with the given action head."""
    if not net.is_recurrent:
        return ActorCritic(head=head, hidden_sizes=net.hidden_sizes, activation=net.activation)
    from seqrl.sequence import SequenceStack

    layer_kwargs = {
        "state_size": net.state_size,
        "blocks": net.blocks,
        "discretization": net.discretization,
        "clip_eigs": net.clip_eigs,
        "init_kind": net.s4d_init,
    }
    stack = SequenceStack(
        kind=net.backbone,
        d_model=net.d_model,
        num_layers=net.num_layers,
        norm=net.norm,
        glu=net.glu,
        residual=net.residual,
        layer_kwargs=layer_kwargs,
        parent=None,
    )
    return RecurrentActorCritic(
        head=head, stack=stack, hidden_sizes=net.hidden_sizes, activation=net.activation
    )
