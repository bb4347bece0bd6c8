"""Publish recordings as MQTT streams, paced like the real thing: ``edge-agent replay``.

A recording becomes one stream: each row is published as the JSON object the agent expects
(``{"ts": "<ISO 8601>", "<feature>": <value>, ...}``) on the stream's topic. Pacing is either a
fixed ``rate`` (rows per second per stream) or a ``speed`` factor applied to the file's own
timestamps (``speed=10``: ten minutes of recording in one minute). Several recordings play side
by side, each from its own start. The demo feeds its simulated robots through the same code.

CSV files are read with the trainer's reader (:mod:`edge_agent.csvdata`), so a file the trainer
refuses is refused here with the same message.
"""

from __future__ import annotations

import heapq
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .csvdata import Recording
from .errors import DataError
from .payloads import iso


@dataclass(frozen=True)
class Feed:
    """One recording played on one topic; ``names`` are the payload field names per column."""

    topic: str
    recording: Recording
    names: Sequence[str]
    timestamp_field: str | None = "ts"

    def payload(self, row: int) -> bytes:
        values = self.recording.values[row]
        body: dict[str, object] = {}
        stamps = self.recording.timestamps
        if self.timestamp_field and stamps is not None:
            body[self.timestamp_field] = iso(float(stamps[row]))
        body.update(zip(self.names, (float(v) for v in values)))
        return json.dumps(body, separators=(",", ":")).encode()


def select_features(recording: Recording, features: Sequence[str]) -> Recording:
    """The recording's columns in the model's feature order; names what is missing."""
    missing = [name for name in features if name not in recording.features]
    if missing:
        raise DataError(f"lacks feature column(s) {missing} that the model needs (the file has "
                        f"{recording.features}); rename columns or pass --rename",
                        file=recording.path, row=1)
    order = [recording.features.index(name) for name in features]
    return Recording(path=recording.path, features=list(features),
                     values=recording.values[:, order], timestamps=recording.timestamps,
                     rows=recording.rows, labels=recording.labels)


def schedule(feeds: Sequence[Feed], *, rate: float | None = None, speed: float | None = None
             ) -> Iterator[tuple[float, Feed, int]]:
    """``(due seconds from start, feed, row)`` for every row of every feed, in due order."""
    if (rate is None) == (speed is None):
        raise ValueError("give either rate or speed")
    heap: list[tuple[float, int, int]] = []

    def due(index: int, row: int) -> float:
        rec = feeds[index].recording
        if speed is not None:
            if rec.timestamps is None:
                raise DataError("has no timestamps: use --rate instead of --speed",
                                file=rec.path)
            return float(rec.timestamps[row] - rec.timestamps[0]) / speed
        assert rate is not None
        return row / rate

    for index, feed in enumerate(feeds):
        if len(feed.recording):
            heapq.heappush(heap, (due(index, 0), index, 0))
    while heap:
        when, index, row = heapq.heappop(heap)
        yield when, feeds[index], row
        if row + 1 < len(feeds[index].recording):
            heapq.heappush(heap, (due(index, row + 1), index, row + 1))


@dataclass
class Progress:
    """Rows sent so far, reported to a terminal about once a second."""

    total: int
    sent: int = 0
    started: float = 0.0
    last_report: float = 0.0
    stream: object = sys.stderr

    def tick(self, now: float, force: bool = False) -> None:
        if not force and now - self.last_report < 1.0:
            return
        self.last_report = now
        elapsed = max(now - self.started, 1e-9)
        print(f"\rreplay: {self.sent}/{self.total} readings ({100 * self.sent / self.total:.0f}%),"
              f" {self.sent / elapsed:.0f}/s", end="" if not force else "\n",
              file=self.stream, flush=True)  # type: ignore[arg-type]


def play(publish: Callable[[str, bytes], None], feeds: Sequence[Feed], *,
         rate: float | None = None, speed: float | None = None,
         stop: threading.Event | None = None, progress: Progress | None = None,
         clock: Callable[[], float] = time.monotonic) -> int:
    """Publish every row when it is due; returns how many were published."""
    started = clock()
    if progress is not None:
        progress.started = started
    sent = 0
    for due, feed, row in schedule(feeds, rate=rate, speed=speed):
        if stop is not None and stop.is_set():
            break
        wait = started + due - clock()
        if wait > 0:
            if stop is not None:
                if stop.wait(wait):
                    break
            else:
                time.sleep(wait)
        publish(feed.topic, feed.payload(row))
        sent += 1
        if progress is not None:
            progress.sent = sent
            progress.tick(clock())
    if progress is not None:
        progress.tick(clock(), force=True)
    return sent


def topics_for(files: Sequence[str], topics: Sequence[str]) -> list[str]:
    """One topic per file: as many ``--topic`` as files, or one with ``{stem}`` for all.

    >>> topics_for(["a/r1.csv", "b/r2.csv"], ["robots/{stem}/joints/j1/telemetry"])
    ['robots/r1/joints/j1/telemetry', 'robots/r2/joints/j1/telemetry']
    """
    from pathlib import Path

    if len(topics) == len(files):
        return [t.format(stem=Path(f).stem) for t, f in zip(topics, files)]
    if len(topics) == 1 and (len(files) == 1 or "{stem}" in topics[0]):
        return [topics[0].format(stem=Path(f).stem) for f in files]
    raise DataError(f"{len(files)} file(s) but {len(topics)} --topic: give one topic per file, "
                    "or one topic containing {stem} (the file name without .csv)")


def simulated(values: np.ndarray, t: np.ndarray, start_epoch: float, features: Sequence[str],
              name: str) -> Recording:
    """A simulation as a recording (timestamps from ``start_epoch``), for the demo."""
    n = len(t)
    return Recording(path=name, features=list(features), values=values,
                     timestamps=start_epoch + t, rows=np.arange(2, n + 2))
