"""The bounded hand-over between paho's network thread and the worker.

``put_many`` never blocks (the network thread must keep reading the socket and answering
keepalives whatever the worker is doing): when the queue is full it drops the oldest or the
newest readings and returns them so the caller can count each drop against its stream.
Readings cross in batches both ways — ``put_many`` takes those of one socket read, ``get_batch``
hands the worker everything waiting (up to a limit) — each under one lock, so the per-reading
cost of the hand-over stays small at high rates.

>>> q = BoundedQueue(2, "drop_oldest")
>>> q.put_many([0, 1, 2])
[0]
>>> q.get_batch(10, timeout=0)
[1, 2]
>>> q = BoundedQueue(2, "drop_newest")
>>> q.put_many([0, 1, 2]), q.put_many([3]), q.get_batch(10, timeout=0)
([2], [3], [0, 1])
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    def __init__(self, max_size: int, policy: Literal["drop_oldest", "drop_newest"]) -> None:
        self.max_size = max_size
        self.drop_oldest = policy == "drop_oldest"
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, batch: list[T]) -> list[T]:
        """Add ``batch`` in order; returns the items dropped to make room (the oldest waiting,
        or the newest of ``batch``, by policy), usually none."""
        with self._cond:
            items = self._items
            room = self.max_size - len(items)
            dropped: list[T] = []
            if len(batch) > room:
                if self.drop_oldest:
                    excess = len(batch) - room
                    dropped = [items.popleft() for _ in range(min(excess, len(items)))]
                    overflow = excess - len(dropped)  # the batch alone is larger than the queue
                    if overflow:
                        dropped += batch[:overflow]
                        batch = batch[overflow:]
                else:  # room >= 0: the queue never holds more than max_size
                    dropped, batch = batch[room:], batch[:room]
            items.extend(batch)
            if self._waiting and items:
                self._cond.notify()
            return dropped

    def get_batch(self, limit: int, timeout: float) -> list[T]:
        """Up to ``limit`` items, waiting at most ``timeout`` seconds for the first."""
        with self._cond:
            if not self._items and timeout > 0:
                self._waiting = True
                self._cond.wait(timeout)
                self._waiting = False
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
                return batch
            return [items.popleft() for _ in range(limit)]

    def wake(self) -> None:
        """Wake a waiting consumer (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()
