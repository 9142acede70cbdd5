"""A stack of sequence layers: input projection, then per layer pre-norm -> sequence layer ->
activation (or gated linear unit) -> residual."""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax

from seqrl.sequence.rnn import GRU, LSTM
from seqrl.sequence.s4d import S4D
from seqrl.sequence.s5 import S5

LAYERS = {"s5": S5, "s4d": S4D, "gru": GRU, "lstm": LSTM}


def make_layer(kind: str, d_model: int, **kwargs) -> nn.Module:
    """A sequence layer by name; ``kwargs`` only reach the layers that take them."""
    cls = LAYERS[kind]
    fields = set(getattr(cls, "__dataclass_fields__", {})) | {"name", "parent"}
    return cls(d_model=d_model, **{k: v for k, v in kwargs.items() if k in fields})


class SequenceStack(nn.Module):
    """``(carry, x[T, B, F], resets[T, B]) -> (carry, y[T, B, d_model])``."""

    kind: Literal["s5", "s4d", "gru", "lstm"]
    d_model: int = 64
    num_layers: int = 1
    norm: Literal["layer", "none"] = "layer"
    glu: bool = True
    residual: bool = True
    layer_kwargs: Any = None  # dict of layer options (state_size, blocks, ...)

    def _layers(self) -> list[nn.Module]:
        kw = dict(self.layer_kwargs or {})
        # parent=None: detached copies, only asked for their carry shapes
        return [
            make_layer(self.kind, self.d_model, parent=None, **kw) for _ in range(self.num_layers)
        ]

    def initialize_carry(self, batch: int):
        return tuple(layer.initialize_carry(batch) for layer in self._layers())

    @nn.compact
    def __call__(self, carry, x: jax.Array, resets: jax.Array):
        x = nn.Dense(self.d_model, name="embed")(x)
        new_carry = []
        for i in range(self.num_layers):
            kw = dict(self.layer_kwargs or {})
            layer = make_layer(self.kind, self.d_model, name=f"layer_{i}", **kw)
            y = nn.LayerNorm()(x) if self.norm == "layer" else x
            c, y = layer(carry[i], y, resets)
            new_carry.append(c)
            if self.glu:  # GLU variant of S5: gelu(y) * sigmoid(W gelu(y))
                y = nn.gelu(y)
                y = y * jax.nn.sigmoid(nn.Dense(self.d_model)(y))
            else:
                y = nn.gelu(y)
            x = x + y if self.residual else y
        return tuple(new_carry), x


__all__ = ["LAYERS", "SequenceStack", "make_layer"]
