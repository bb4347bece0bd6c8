"""The bounded hand-over between paho's network thread and the worker.

``put`` never blocks (the network thread must keep reading the socket and answering keepalives
whatever the worker is doing): when the queue is full it drops the oldest or the newest reading
and returns it so the caller can count the drop against its stream. ``get_batch`` hands the
worker everything waiting (up to a limit) under one lock, so the per-reading cost of the
hand-over stays small at high rates.

>>> q = BoundedQueue(2, "drop_oldest")
>>> [q.put(i) for i in range(3)]
[None, None, 0]
>>> q.get_batch(10, timeout=0)
[1, 2]
>>> q = BoundedQueue(2, "drop_newest")
>>> [q.put(i) for i in range(3)], q.get_batch(10, timeout=0)
([None, None, 2], [0, 1])
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

    def put(self, item: T) -> T | None:
        """Add ``item``; returns the item dropped to make room (or ``item`` itself), if any."""
        with self._cond:
            dropped = None
            if len(self._items) >= self.max_size:
                if not self.drop_oldest:
                    return item
                dropped = self._items.popleft()
            self._items.append(item)
            if self._waiting:
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
