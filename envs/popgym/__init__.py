"""POPGym's memory tasks (Morad et al., ICLR 2023) in pure JAX, as raw seqrl environments.

Registered as ``popgym/<Task><Difficulty>``, e.g. ``popgym/RepeatPreviousEasy``. Every factory
takes the task's settings as keyword overrides (``num_decks``, ``k``, ``max_steps_in_episode``,
...) and ``previous_action=True`` to wrap the env in ``PreviousActionObservation``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqrl.envs.core import Environment
from seqrl.envs.popgym.cards import Autoencode, CountRecall, RepeatFirst, RepeatPrevious
from seqrl.envs.popgym.cartpole import NoisyStatelessCartPole, StatelessCartPole
from seqrl.envs.popgym.minesweeper import MineSweeper
from seqrl.envs.popgym.wrappers import PreviousActionObservation

# Difficulty settings, from popgym/envs/*.py.
TASKS: dict[str, tuple[type[Environment], dict[str, dict[str, Any]]]] = {
    "RepeatFirst": (
        RepeatFirst,
        {"Easy": {"num_decks": 1}, "Medium": {"num_decks": 8}, "Hard": {"num_decks": 16}},
    ),
    "RepeatPrevious": (
        RepeatPrevious,
        {
            "Easy": {"num_decks": 1, "k": 4},
            "Medium": {"num_decks": 2, "k": 32},
            "Hard": {"num_decks": 3, "k": 64},
        },
    ),
    "Autoencode": (
        Autoencode,
        {"Easy": {"num_decks": 1}, "Medium": {"num_decks": 2}, "Hard": {"num_decks": 3}},
    ),
    "CountRecall": (
        CountRecall,
        {
            "Easy": {"num_decks": 1, "deck_type": "colors"},
            "Medium": {"num_decks": 2, "deck_type": "suits"},
            "Hard": {"num_decks": 4, "deck_type": "ranks"},
        },
    ),
    "StatelessCartPole": (
        StatelessCartPole,
        {
            "Easy": {"max_steps_in_episode": 200},
            "Medium": {"max_steps_in_episode": 400},
            "Hard": {"max_steps_in_episode": 600},
        },
    ),
    "NoisyStatelessCartPole": (
        NoisyStatelessCartPole,
        {
            "Easy": {"max_steps_in_episode": 200, "noise_sigma": 0.1},
            "Medium": {"max_steps_in_episode": 200, "noise_sigma": 0.2},
            "Hard": {"max_steps_in_episode": 200, "noise_sigma": 0.3},
        },
    ),
    "MineSweeper": (
        MineSweeper,
        {
            "Easy": {"rows": 4, "cols": 4, "num_mines": 2},
            "Medium": {"rows": 6, "cols": 6, "num_mines": 6},
            "Hard": {"rows": 8, "cols": 8, "num_mines": 10},
        },
    ),
}


def _factory(cls: type[Environment], settings: dict[str, Any], name: str) -> Callable:
    def factory(previous_action: bool = False, **overrides) -> Environment:
        env = cls(**{**settings, **overrides}, name=name)
        return PreviousActionObservation(env) if previous_action else env

    return factory


def register_all(register: Callable[[str, Callable[..., Environment]], None]) -> None:
    """Registers every task at every difficulty with ``register(name, factory)``."""
    for task, (cls, difficulties) in TASKS.items():
        for difficulty, settings in difficulties.items():
            name = f"popgym/{task}{difficulty}"
            register(name, _factory(cls, settings, name))


__all__ = [
    "Autoencode",
    "CountRecall",
    "MineSweeper",
    "NoisyStatelessCartPole",
    "PreviousActionObservation",
    "RepeatFirst",
    "RepeatPrevious",
    "StatelessCartPole",
    "TASKS",
    "register_all",
]
