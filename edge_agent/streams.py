"""Per-stream memory, and which readings a stream accepts.

Every stream (one robot joint, one pump) carries its own LSTM state, baseline, warm-up
counter, smoothing memory, open episode and last timestamp. Nothing is shared between streams,
which is what makes interleaved streams give the same results as each stream run alone.

Ordering is judged by the readings' own timestamps when they have them: a reading not after
the previous one is a duplicate or out of order and is dropped without touching the state. A
gap longer than ``gap_reset_s`` (reading time, or arrival time for readings without one) makes
the stream start over: its LSTM state resets and it warms up again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .alerts import EpisodeState
from .normalise import Baseline, Scale, Vector
from .history import ScoreHistory
from .scoring import ScoreState


class Admission(Enum):
    ACCEPT = "accept"
    RESET = "gap_reset"
    DUPLICATE = "duplicate_timestamp"
    OUT_OF_ORDER = "out_of_order"


@dataclass(slots=True)
class StreamState:
    """Everything one stream remembers between readings."""

    stream_id: str
    lstm: list[np.ndarray]
    warmup_left: int
    baseline: Baseline | None = None
    scale: Scale | None = None
    anchor: Vector | None = None  # the normalised baseline mean, once the baseline is complete
    prediction: Vector | None = None  # the normalised forecast of the next reading
    last_ts: float | None = None
    score: ScoreState = field(default_factory=ScoreState)
    history: ScoreHistory = field(default_factory=ScoreHistory)  # kept across resets
    # one per part of the score with relative.part_z, made on first use; kept across resets
    part_histories: list[ScoreHistory] = field(default_factory=list)
    episode: EpisodeState = field(default_factory=EpisodeState)
    readings: int = 0
    resets: int = 0


def admit(state: StreamState, ts: float, has_own_timestamp: bool, gap_reset_s: float | None
          ) -> Admission:
    """Whether a reading at ``ts`` may enter ``state`` (the state itself is not changed).

    >>> s = StreamState("a", [], 0, last_ts=10.0)
    >>> [admit(s, t, True, 5.0).value for t in (11.0, 10.0, 9.0, 16.0)]
    ['accept', 'duplicate_timestamp', 'out_of_order', 'gap_reset']
    """
    last = state.last_ts
    if last is None:
        return Admission.ACCEPT
    if has_own_timestamp:
        if ts == last:
            return Admission.DUPLICATE
        if ts < last:
            return Admission.OUT_OF_ORDER
    if gap_reset_s is not None and ts - last > gap_reset_s:
        return Admission.RESET
    return Admission.ACCEPT
