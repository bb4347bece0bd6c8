"""The durable alert outbox: an alert is on disk before it is published, and leaves the disk only
when the broker has acknowledged it (PUBACK).

After a crash or a power cut, whatever was not acknowledged is published again at the next
start; alert ids make such duplicates recognisable. SQLite in WAL mode with ``synchronous=FULL``
makes every insert survive a power cut (alerts are rare, so the fsync per alert is affordable on
an SD card). The outbox is bounded: when full, the oldest ``update`` goes first (an update is
superseded by the next one anyway), and only when there is none the oldest alert of any kind;
every drop is counted.

>>> box = Outbox(":memory:", max_rows=2)
>>> a = box.add("id1", "start", "t", b"1"); b = box.add("id1", "update", "t", b"2")
>>> c = box.add("id1", "end", "t", b"3")        # full: the update is dropped
>>> [row.kind for row in box.pending()], box.dropped
(['start', 'end'], 1)
>>> box.remove([a]); [row.kind for row in box.pending()]
['end']
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    kind     TEXT NOT NULL,
    topic    TEXT NOT NULL,
    payload  BLOB NOT NULL,
    created  REAL NOT NULL
);
"""


class Row(NamedTuple):
    row_id: int
    alert_id: str
    kind: str
    topic: str
    payload: bytes


class Outbox:
    """A bounded, durable queue of alerts waiting for the broker's acknowledgement."""

    def __init__(self, path: str | Path, max_rows: int = 10000) -> None:
        self.path = str(path)
        self.max_rows = max_rows
        self.dropped = 0
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # A disk that stays locked or stalled longer than this raises in the worker, which ends
        # the agent (exit 1) so that the service manager restarts it; shorter stalls just wait
        # (and the systemd watchdog sees the worker make no progress meanwhile).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def add(self, alert_id: str, kind: str, topic: str, payload: bytes) -> int:
        """Store an alert (durably) and return its row id; makes room first when full."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                while self._count >= self.max_rows:
                    victim = db.execute("SELECT row_id FROM outbox WHERE kind = 'update' "
                                        "ORDER BY row_id LIMIT 1").fetchone() or \
                        db.execute("SELECT row_id FROM outbox ORDER BY row_id LIMIT 1").fetchone()
                    db.execute("DELETE FROM outbox WHERE row_id = ?", victim)
                    self._count -= 1
                    self.dropped += 1
                cursor = db.execute("INSERT INTO outbox (alert_id, kind, topic, payload, created)"
                                    " VALUES (?, ?, ?, ?, ?)",
                                    (alert_id, kind, topic, payload, time.time()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += 1
            return int(cursor.lastrowid or 0)

    def remove(self, row_ids: Iterable[int]) -> None:
        """Forget alerts the broker acknowledged."""
        ids = [(row_id,) for row_id in row_ids]
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany("DELETE FROM outbox WHERE row_id = ?", ids)
            self._count -= self._db.total_changes - before
            self._db.execute("COMMIT")

    def pending(self) -> list[Row]:
        """Every stored alert, oldest first."""
        with self._lock:
            return [Row(*r) for r in self._db.execute(
                "SELECT row_id, alert_id, kind, topic, payload FROM outbox ORDER BY row_id")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
