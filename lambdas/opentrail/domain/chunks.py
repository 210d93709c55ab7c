"""Splitting items into API requests bounded by count and bytes (SendMessageBatch, PutLogEvents,
PutEvents). Pure code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def bounded_chunks(
    items: Iterable[T],
    weight: Callable[[T], int],
    *,
    max_items: int,
    max_bytes: int,
    joins: Callable[[T, T], bool] = lambda first, item: True,
) -> list[list[T]]:
    """Consecutive runs of `items`, in order: each at most `max_items` long and `max_bytes` of
    `weight`, and `joins(first item of the run, item)` for every item (e.g. a time span). An item
    heavier than `max_bytes` gets a run of its own (the caller filters those)."""
    chunks: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item in items:
        heft = weight(item)
        if current and (len(current) >= max_items or size + heft > max_bytes or not joins(current[0], item)):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += heft
    if current:
        chunks.append(current)
    return chunks
