"""POPGym's MineSweeper: Minesweeper with the board hidden; only the clicked tile's count shows.

Definition from ``popgym/envs/minesweeper.py`` (popgym 1.0.7): Easy 4x4 with 2 mines, Medium 6x6
with 6, Hard 8x8 with 10. ``L = rows * cols - mines`` (the free tiles). Reward: ``1/L`` for
uncovering a free tile, ``-0.5/(L - 2)`` for clicking an already uncovered tile, and
``-0.5 - 1/L`` (and termination) for clicking a mine; uncovering every free tile also terminates.
The episode is truncated after ``L`` steps. Observation: the one-hot number of mines in the
clicked tile's 3x3 neighbourhood, over ``min(mines + 1, 10)`` classes (class 0 at reset). The
action is a flat tile index ``row * cols + col`` (POPGym's MultiDiscrete ``(row, col)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from seqrl.envs.popgym.base import PopGymEnvironment, one_hot
from seqrl.envs.spaces import Box, Discrete

CLEAR, MINE, VIEWED = 0, 1, 2  # POPGym's HiddenSquare


@struct.dataclass
class MineSweeperParams:
    rows: int = struct.field(pytree_node=False, default=4)
    cols: int = struct.field(pytree_node=False, default=4)
    num_mines: int = struct.field(pytree_node=False, default=2)
    max_steps_in_episode: int = 14


@struct.dataclass
class MineSweeperState:
    grid: jax.Array  # [rows * cols] CLEAR / MINE / VIEWED
    neighbours: jax.Array  # [rows * cols] mines in each tile's 3x3 neighbourhood
    time: jax.Array


def neighbour_counts(mines: jax.Array) -> jax.Array:
    """Mines in each tile's 3x3 neighbourhood (itself included), zero outside the board."""
    rows, cols = mines.shape
    padded = jnp.pad(mines, 1)
    shifts = [padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)]
    return sum(shifts)


class MineSweeper(PopGymEnvironment):
    """See the module docstring; reward scales come from the board, the time limit from params."""

    def __init__(
        self,
        rows: int = 4,
        cols: int = 4,
        num_mines: int = 2,
        max_steps_in_episode: int | None = None,
        name: str | None = None,
    ):
        rows, cols, num_mines = int(rows), int(cols), int(num_mines)
        if rows < 1 or cols < 1 or not 1 <= num_mines <= rows * cols - 3:
            raise ValueError(
                f"MineSweeper needs a board of at least 1x1 and 1 <= num_mines <= tiles - 3, "
                f"got {rows}x{cols} with {num_mines} mines"
            )
        free = rows * cols - num_mines
        limit = free if max_steps_in_episode is None else int(max_steps_in_episode)
        super().__init__(MineSweeperParams(rows, cols, num_mines, limit), name)

    def reset(self, key, params):
        tiles = params.rows * params.cols
        mines = jax.random.choice(key, tiles, (params.num_mines,), replace=False)
        grid = jnp.zeros((tiles,), jnp.int32).at[mines].set(MINE)
        neighbours = neighbour_counts(grid.reshape(params.rows, params.cols)).reshape(-1)
        state = MineSweeperState(grid, neighbours, jnp.zeros((), jnp.int32))
        return self._obs(jnp.zeros((), jnp.int32), params), state

    def step(self, key, state, action, params):
        free = params.rows * params.cols - params.num_mines
        tile = state.grid[action]
        reward = jnp.where(tile == VIEWED, -0.5 / (free - 2), 1.0 / free)
        reward = jnp.where(tile == MINE, -0.5 - 1.0 / free, reward).astype(jnp.float32)
        grid = state.grid.at[action].set(jnp.where(tile == CLEAR, VIEWED, tile))
        time = state.time + 1
        terminated = (tile == MINE) | jnp.all(grid != CLEAR)
        # POPGym sets truncated only when not terminated; terminated wins for bootstrapping anyway
        truncated = time >= params.max_steps_in_episode
        obs = self._obs(state.neighbours[action], params)
        return (
            obs,
            MineSweeperState(grid, state.neighbours, time),
            reward,
            terminated,
            truncated,
            {},
        )

    def _obs(self, count, params):
        return one_hot(count, self._num_counts(params))

    def _num_counts(self, params) -> int:
        return min(params.num_mines + 1, 10)

    def observation_space(self, params) -> Box:
        return Box.make(0.0, 1.0, (self._num_counts(params),))

    def action_space(self, params) -> Discrete:
        return Discrete(params.rows * params.cols)
