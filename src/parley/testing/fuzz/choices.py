"""Where every decision of a mutation comes from: :class:`Choices`, and helpers over it.

The same choices give the same hostile message: :class:`RandomChoices` over a seeded
``random.Random`` for long runs, Hypothesis' ``draw`` in tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Choices(Protocol):
    """Where every decision of a mutation comes from."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        ...


class RandomChoices:
    """Choices from a seeded ``random.Random``: the long run's."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


def pick(c: Choices, items: Sequence[T]) -> T:
    return items[c.integer(0, len(items) - 1)]


def chance(c: Choices, percent: int) -> bool:
    return c.integer(1, 100) <= percent


def blob(c: Choices, size: int) -> bytes:
    """``size`` bytes from one choice (large blobs would not fit a Hypothesis example)."""
    return random.Random(c.integer(0, 2**32 - 1)).randbytes(size)
