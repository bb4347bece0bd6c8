"""Decide: turn a stream's scores into alert *episodes* with ``start``, ``update`` and ``end``.

An episode starts when the smoothed score stays at or above the enter threshold for
``enter_readings`` consecutive readings; it reports ``update`` when a new peak is reached, at
most once per ``update_interval_s`` of reading time; it ends when the score stays below the
(lower) exit threshold for ``exit_readings`` consecutive readings (hysteresis). After an end,
``cooldown_readings`` readings must pass before a new episode may start, so a flapping signal
gives one episode, not twenty.

Time here is reading time (the reading's own timestamp when it has one), so the same recording
gives the same alerts offline and live. The alert id is derived from the stream and the start
time, so it is stable across ``start``/``update``/``end`` and across restarts.

>>> s = AlertSettings(enter_readings=2, exit_readings=2, update_interval_s=0, cooldown_readings=0)
>>> ep = EpisodeState()
>>> [advance(ep, s, score, float(t), enter=3, exit=2)
...  for t, score in enumerate([1, 4, 5, 6, 1.5, 1, 1])]
[None, None, 'start', 'update', None, 'end', None]
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

EventType = Literal["start", "update", "end"]
_NAMESPACE = uuid.UUID("8d6f3f5e-6c1a-4c55-9a7e-5b0d3c2a1e90")


@dataclass(frozen=True)
class AlertSettings:
    """Hysteresis and rate limits of the episode state machine (agent config ``alerts``)."""

    enter_readings: int = 3
    exit_readings: int = 10
    update_interval_s: float = 10.0
    cooldown_readings: int = 20


@dataclass(slots=True)
class EpisodeState:
    """One stream's decision memory (all plain values, so snapshots are easy)."""

    active: bool = False
    alert_id: str | None = None
    started_at: float | None = None
    peak: float = 0.0
    peak_at: float | None = None
    reported_peak: float = 0.0
    last_update_at: float | None = None
    above: int = 0
    below: int = 0
    cooldown_left: int = 0
    readings: int = 0
    episodes: int = 0


def alert_id(stream_id: str, started_at: float, number: int) -> str:
    """A deterministic id for a stream's ``number``-th episode starting at ``started_at``."""
    return str(uuid.uuid5(_NAMESPACE, f"{stream_id}|{started_at:.6f}|{number}"))


def advance(ep: EpisodeState, settings: AlertSettings, score: float, at: float, *,
            enter: float, exit: float, stream_id: str = "") -> EventType | None:
    """Feed one smoothed score; return the event it causes, if any."""
    if not ep.active:
        if ep.cooldown_left > 0:
            ep.cooldown_left -= 1
            ep.above = 0
            return None
        ep.above = ep.above + 1 if score >= enter else 0
        if ep.above < settings.enter_readings:
            return None
        ep.episodes += 1
        ep.active = True
        ep.started_at = at
        ep.alert_id = alert_id(stream_id, at, ep.episodes)
        ep.peak = ep.reported_peak = score
        ep.peak_at = ep.last_update_at = at
        ep.below = 0
        ep.readings = 1
        return "start"
    ep.readings += 1
    if score > ep.peak:
        ep.peak, ep.peak_at = score, at
    ep.below = ep.below + 1 if score < exit else 0
    if ep.below >= settings.exit_readings:
        close(ep, settings)
        return "end"
    if ep.peak > ep.reported_peak and (
            ep.last_update_at is None or at - ep.last_update_at >= settings.update_interval_s):
        ep.reported_peak = ep.peak
        ep.last_update_at = at
        return "update"
    return None


def close(ep: EpisodeState, settings: AlertSettings) -> None:
    """End the open episode (the caller publishes the ``end``) and start the cooldown."""
    ep.active = False
    ep.above = 0
    ep.below = 0
    ep.cooldown_left = settings.cooldown_readings
