"""Sequence layers with ONE contract.

    layer.initialize_carry(batch) -> carry
    layer(carry, x[T, B, F], resets[T, B]) -> (carry, y[T, B, H])

``resets[t] = 1`` means x[t] starts a new episode: the state is zeroed before x[t] is consumed.
Acting is the same call with T = 1; learning re-runs a rollout from its initial carry.
"""

from seqrl.sequence.rnn import GRU, LSTM
from seqrl.sequence.s4d import S4D
from seqrl.sequence.s5 import S5
from seqrl.sequence.stack import LAYERS, SequenceStack, make_layer

__all__ = ["GRU", "LAYERS", "LSTM", "S4D", "S5", "SequenceStack", "make_layer"]
