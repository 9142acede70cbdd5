"""GRU and LSTM layers with the sequence-layer contract, through ``lax.scan`` (``nn.scan``).

The state is zeroed before x_t is consumed where ``resets[t]`` is set, exactly as in the
resettable associative scan.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class _Recurrent(nn.Module):
    """Runs a flax RNN cell over time with resets."""

    d_model: int
    cell_type: type = nn.GRUCell

    def initialize_carry(self, batch: int):
        zeros = jnp.zeros((batch, self.d_model), jnp.float32)
        return (zeros, zeros) if self.cell_type is nn.OptimizedLSTMCell else zeros

    @nn.compact
    def __call__(self, carry, x: jax.Array, resets: jax.Array):
        def step(cell, carry, inputs):
            x_t, reset_t = inputs
            carry = jax.tree.map(lambda c: jnp.where(reset_t[:, None], 0.0, c), carry)
            return cell(carry, x_t)

        scan = nn.scan(
            step, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0
        )
        return scan(self.cell_type(features=self.d_model), carry, (x, resets))


class GRU(_Recurrent):
    cell_type: type = nn.GRUCell


class LSTM(_Recurrent):
    cell_type: type = nn.OptimizedLSTMCell
