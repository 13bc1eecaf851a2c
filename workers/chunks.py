"""A list of inputs in fixed-size pieces: the forward passes it takes, and how many."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in order, `size` at a time (the last piece may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def count_chunks(count: int, size: int) -> int:
    """How many pieces `chunks` makes of `count` items."""
    return -(-count // size)
