"""A bounded parallel map: worker threads read and decode images while the caller computes."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator


def prefetch(fn: Callable, items: Iterable, executor: ThreadPoolExecutor, ahead: int) -> Iterator:
    """Like executor.map, but never more than `ahead` items in flight, so memory stays flat."""
    pending: deque = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
