"""What every POPGym task here shares: a name, default params fixed by difficulty, one-hot codes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqrl.envs.core import Environment


class PopGymEnvironment(Environment):
    """A raw POPGym task: ``default_params`` holds one difficulty's settings."""

    def __init__(self, params: Any, name: str | None = None):
        self._params = params
        self._name = name or type(self).__name__

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> Any:
        return self._params


def one_hot(index: jax.Array, n: int) -> jax.Array:
    """POPGym's discrete observations as networks see them (gymnasium's ``flatten``)."""
    return jax.nn.one_hot(index, n, dtype=jnp.float32)
