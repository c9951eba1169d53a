"""What every simulation environment yields, and the protocol they share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bandit_server.core.types import FeatureValue
from bandit_server.errors import InvalidArgument, describe

Context = dict[str, dict[str, FeatureValue]]

# Random numbers are drawn in blocks of this many rounds, whatever `n` is, so the first m rounds
# of `rounds(n, seed)` are the rounds of `rounds(m, seed)`: a longer run extends a shorter one.
BLOCK_ROUNDS = 1024


@dataclass(frozen=True, eq=False, slots=True)
class Round:
    """One simulated decision with its ground truth.

    `rewards` are the potential outcomes: the reward each action would get this round, drawn
    from the seed before any policy acts, so every policy run on the same seed faces the same
    draws. `delays[a]` is how many simulated seconds after `time` the reward of action a arrives.
    Arrays are read-only.
    """

    index: int
    time: float
    context: Context
    actions: tuple[dict[str, Any], ...]
    expected_rewards: np.ndarray
    rewards: np.ndarray
    delays: np.ndarray
    best_action: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.actions)
        if k < 1:
            raise InvalidArgument("actions", "no actions given; at least one is needed")
        for name in ("expected_rewards", "rewards", "delays"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.shape != (k,):
                shape = getattr(array, "shape", None)
                raise InvalidArgument(name, f"shape {shape!r} is not ({k},), one per action")
            array.flags.writeable = False
        if not 0 <= self.best_action < k:
            raise InvalidArgument("best_action", f"{self.best_action!r} is not in [0, {k})")


class Environment(Protocol):
    """A source of rounds with known ground truth. Same seed, same rounds, bit for bit."""

    @property
    def name(self) -> str:
        """A short label for tables and traces."""
        ...

    @property
    def n_actions(self) -> int:
        """How many actions every round offers."""
        ...

    def rounds(self, n: int, seed: int) -> Iterator[Round]:
        """The first `n` rounds of the environment seeded with `seed`."""
        ...


def check_run(n: int, seed: int) -> None:
    """Raise InvalidArgument unless `n` is a count and `seed` a non-negative integer."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InvalidArgument("n", f"{describe(n)} is not a non-negative integer")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidArgument("seed", f"{describe(seed)} is not a non-negative integer")


def blocks(
    seed: np.random.SeedSequence, draw: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """Endless blocks of BLOCK_ROUNDS rounds' worth of random numbers from one child stream.

    `draw(rng, size)` returns arrays whose first axis is the round.
    """
    rng = np.random.default_rng(seed)
    while True:
        yield draw(rng, BLOCK_ROUNDS)


def per_round(
    seed: np.random.SeedSequence, draw: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """The rows of `blocks`: one dict of arrays (or scalars) per round."""
    for block in blocks(seed, draw):
        for i in range(BLOCK_ROUNDS):
            yield {key: value[i] for key, value in block.items()}


def check_count(field_name: str, value: object, minimum: int) -> None:
    """Raise InvalidArgument unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(field_name, f"{describe(value)} is not an integer >= {minimum}")


def check_positive(field_name: str, value: float) -> None:
    """Raise InvalidArgument unless `value` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < np.inf:
        raise InvalidArgument(field_name, f"{describe(value)} is not a finite number > 0")
