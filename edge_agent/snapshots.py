"""Per-stream state across restarts: atomic snapshots, keyed by the bundle's sha256.

Everything a stream remembers — LSTM h and c, forecast, baseline, smoothing, warm-up counter,
open alert episode, last timestamp — is written as JSON to ``snapshot.json`` in the state
folder: first to a temporary file, which is fsynced and then renamed over the old one (and the
folder fsynced), so a power cut leaves either the old or the new snapshot, never half of one.
The worker writes the temporary file stream by stream between two batches (a consistent
copy, and no memory for all streams' text at once); the main thread commits it.

The snapshot written at a clean shutdown is exact; a periodic one may be a few seconds older
than the last reading the agent handled before a crash, so streams restored from it warm up
again (their LSTM state is kept, so the warm-up is short) rather than score a forecast made
before a jump.

A snapshot is only restored for the bundle it was taken with (the LSTM state of one model means
nothing to another); otherwise, or when the file is corrupt or truncated, streams start fresh
and the log says why — a bad snapshot is never fatal. An episode that was open when the
snapshot was taken stays open after the restore, so it ends with an ``end`` (same alert id),
never with a second ``start``.

Values round-trip exactly (JSON floats are written with ``repr``), so a restored stream
continues bit for bit as if the agent had never stopped.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .adaptive import AdaptiveState, finite
from .alerts import EpisodeState
from .bundle import SeasonalScoring
from .detector import Detector
from .history import PARTS, ScoreHistory
from .normalise import Baseline, Vector
from .scoring import ScoreState
from .streams import StreamState

FORMAT = 2
FILE_NAME = "snapshot.json"


@dataclass
class Restored:
    """What a snapshot held for one stream, ready for the worker."""

    state: StreamState
    topic: str
    fields: dict[str, str]
    status: str | None


def _array(value: np.ndarray | list[float] | None) -> dict[str, Any] | None:
    """An array as its exact bytes (base64): compact, and bit for bit."""
    if value is None:
        return None
    data = np.ascontiguousarray(value)
    return {"dtype": data.dtype.str, "shape": list(data.shape),
            "b64": base64.b64encode(data.tobytes()).decode("ascii")}


def _unarray(value: dict[str, Any] | None) -> np.ndarray | None:
    if value is None:
        return None
    raw = base64.b64decode(value["b64"], validate=True)
    return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()


def _unlist(value: dict[str, Any] | None, n: int) -> list[float] | None:
    """A per-feature vector (kept as a list of floats in memory) from its exact bytes; one of
    another length than the ``n`` features is refused here, not met mid-stream later."""
    array = _unarray(value)
    if array is None:
        return None
    if array.size != n:
        raise ValueError(f"a per-feature vector of {array.size} values for {n} features")
    return array.astype(np.float64).reshape(-1).tolist()


def _unprofile(score: dict[str, Any], detector: Detector) -> np.ndarray | None:
    """The seasonal profile back, or ``None`` (start it over) when the bundle was recalibrated
    since with another period, other slots or another clock, or without a seasonal part (same
    model, so the snapshot still holds). Snapshots from before time zones were on UTC."""
    array = _unarray(score.get("profile"))
    if array is None or not detector.scorer.profile_fits(
            score.get("season_period_s"), array.shape[0], score.get("season_timezone")):
        return None
    if array.ndim != 2 or array.shape[1] != len(detector.features):
        raise ValueError("seasonal profile does not fit the bundle's features")
    return array.astype(np.float64)


def _counts(value: Any, n: int) -> list[int] | None:
    """Per-feature counts back (readings each feature has stayed away from its baseline)."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != n
            or not all(type(c) is int and c >= 0 for c in value)):
        raise ValueError(f"level counts {value!r} are not {n} counts")
    return value


def _adaptive(value: AdaptiveState | None, error: Vector | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"weights": _array(np.array(value.weights)),
            "inverse": _array(np.array(value.inverse)),
            "past": [_array(v) for v in value.past], "error": _array(error)}


def _unadaptive(value: dict[str, Any] | None, detector: Detector
                ) -> tuple[AdaptiveState | None, Vector | None]:
    """The adaptive forecaster and its smoothed error back, or ``None`` (start it over) when
    the bundle was recalibrated since with another order or without an adaptive part."""
    weights = None if value is None else _unarray(value["weights"])
    if weights is None or not detector.scorer.adaptive_fits(weights.shape[-1] - 1):
        return None, None
    n, m = len(detector.features), weights.shape[-1]
    inverse = _unarray(value["inverse"])
    past = [_unlist(v, n) for v in value["past"]]
    if (weights.shape != (n, m) or inverse is None or inverse.shape != (n, m, m)
            or len(past) > m - 1):
        raise ValueError("adaptive forecaster does not fit the bundle's features")
    state = AdaptiveState(weights.astype(np.float64).tolist(),
                          inverse.astype(np.float64).tolist(), past)  # type: ignore[arg-type]
    if not finite(state):
        raise ValueError("adaptive forecaster is not finite")
    return state, _unlist(value["error"], n)


def _history(value: Any) -> ScoreHistory:
    """A stream's score history back (a snapshot from before it existed: a fresh one)."""
    if value is None:
        return ScoreHistory()
    count, mean, m2, recent = value["count"], value["mean"], value["m2"], value["recent"]
    if (type(count) is not int or count < 0 or not isinstance(recent, list)
            or not all(isinstance(v, (int, float)) and math.isfinite(v)
                       for v in (mean, m2, *recent)) or m2 < 0):
        raise ValueError(f"score history {value!r} is not a count, mean, m2 and recent scores")
    seen = value.get("seen", count + len(recent))  # snapshots before it: at least these
    if type(seen) is not int or seen < 0:
        raise ValueError(f"score history {value!r} has a bad count of scores seen")
    return ScoreHistory(count, float(mean), float(m2), [float(v) for v in recent], seen)


def _part_histories(value: Any) -> list[ScoreHistory]:
    """The histories of the score's parts back (none yet, or a snapshot from before them:
    the stream makes fresh ones when it needs them)."""
    if value is None or value == []:
        return []
    if not isinstance(value, list) or len(value) != len(PARTS):
        raise ValueError(f"part histories are not one per part of {PARTS}")
    return [_history(v) for v in value]


def encode_stream(state: StreamState, topic: str, fields: dict[str, str],
                  status: str | None, season: SeasonalScoring | None = None) -> str:
    """One stream's state as a JSON text (streams are serialised one at a time, so a snapshot
    of 10,000 streams never holds them all as Python objects at once)."""
    baseline = state.baseline
    return json.dumps({
        "topic": topic, "fields": fields, "status": status,
        "lstm": [_array(a) for a in state.lstm],
        "warmup_left": state.warmup_left,
        "baseline": None if baseline is None else {
            "count": baseline.count, "mean": _array(baseline.mean), "m2": _array(baseline.m2)},
        "prediction": _array(state.prediction),
        "last_ts": state.last_ts,
        "score": {"smoothed": state.score.smoothed, "level": _array(state.score.level),
                  "baseline": _array(state.score.baseline),
                  "profile": _array(state.score.profile),
                  "season_period_s": season.period_s if season is not None else None,
                  "season_timezone": season.timezone if season is not None else None,
                  "away": state.score.away,
                  "seasonal": _array(state.score.seasonal),
                  "previous": _array(state.score.previous),
                  "away_noise": _array(state.score.away_noise),
                  "widened": _array(state.score.widened),
                  "adaptive": _adaptive(state.score.adaptive, state.score.adaptive_error)},
        "history": asdict(state.history),
        "part_histories": [asdict(h) for h in state.part_histories],
        "episode": asdict(state.episode),
        "readings": state.readings,
        "resets": state.resets,
    }, separators=(",", ":"))


def decode_stream(stream_id: str, data: dict[str, Any], detector: Detector) -> Restored:
    """Rebuild a stream; raises ``ValueError``/``KeyError``/``TypeError`` on a bad entry."""
    state = detector.new_stream(stream_id)
    n = len(detector.features)
    lstm = [_unarray(a) for a in data["lstm"]]
    zero = detector.model.zero_state()
    if len(lstm) != len(zero) or any(a is None or a.shape != z.shape or a.dtype != z.dtype
                                     for a, z in zip(lstm, zero)):
        raise ValueError("LSTM state does not fit the model")
    state.lstm = lstm  # type: ignore[assignment]
    state.warmup_left = int(data["warmup_left"])
    if data["baseline"] is not None and state.baseline is not None:
        b = data["baseline"]
        state.baseline = Baseline(int(b["count"]), _unlist(b["mean"], n), _unlist(b["m2"], n))
        if state.baseline.count >= detector.normaliser.baseline_readings:
            if detector.normaliser.per_stream:
                state.scale = detector.normaliser.scale_from(state.baseline)
            assert state.scale is not None
            state.anchor = state.scale.forward(state.baseline.mean)
    state.prediction = _unlist(data["prediction"], n)
    state.last_ts = data["last_ts"]
    score = data["score"]
    profile = _unprofile(score, detector)
    seasonal = None if profile is None else _unlist(score.get("seasonal"), n)
    state.score = ScoreState(score["smoothed"], _unlist(score["level"], n),
                             _unlist(score.get("baseline"), n), profile, seasonal,
                             _counts(score.get("away"), n),
                             *(_unlist(score.get(key), n)
                               for key in ("previous", "away_noise", "widened")),
                             *_unadaptive(score.get("adaptive"), detector))
    state.history = _history(data.get("history"))
    state.part_histories = _part_histories(data.get("part_histories"))
    state.episode = EpisodeState(**data["episode"])
    state.readings = int(data["readings"])
    state.resets = int(data["resets"])
    return Restored(state, data["topic"], dict(data["fields"]), data["status"])


_serial = itertools.count(1)


def write_temp(folder: Path, bundle_sha256: str, streams: Iterable[tuple[str, str]],
               clean: bool = False) -> Path:
    """Write a snapshot to a new temporary file beside the real one and return its path.

    ``streams`` yields ``(stream_id, encode_stream(...))`` one at a time and each is written as
    it comes, so even 10,000 streams never exist as one big text in memory. The file is not
    durable or visible yet: :func:`commit` makes it so. Each call has its own file name, so a
    worker writing the next snapshot never touches one still being committed.

    ``clean``: taken at shutdown after the last reading, so nothing happened after it."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{FILE_NAME}.{os.getpid()}-{next(_serial)}.tmp"
    header = json.dumps({"format": FORMAT, "bundle_sha256": bundle_sha256,
                         "saved_at": time.time(), "clean": clean}, separators=(",", ":"))
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(header[:-1] + ',"streams":{')
            separator = ""
            for stream_id, text in streams:
                handle.write(separator + json.dumps(stream_id) + ":" + text)
                separator = ","
            handle.write("}}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path) -> Path:
    """Make a snapshot from :func:`write_temp` the current one, atomically: fsync the file,
    rename it over the old snapshot, fsync the folder. Either the old or the new one survives
    a power cut, never half of one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    target = tmp.parent / FILE_NAME
    os.replace(tmp, target)
    dir_fd = os.open(tmp.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def write(folder: Path, bundle_sha256: str, streams: Iterable[tuple[str, str]],
          clean: bool = False) -> Path:
    """Write and commit a snapshot in one go (at shutdown, when the worker has stopped)."""
    return commit(write_temp(folder, bundle_sha256, streams, clean))


def discard_temps(folder: Path) -> int:
    """Delete temporary snapshots a crash left behind; returns how many there were."""
    stale = list(folder.glob(FILE_NAME + ".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read(folder: Path, bundle_sha256: str, detector: Detector
         ) -> tuple[dict[str, Restored], str]:
    """The restored streams and a sentence for the log saying what happened and why."""
    path = folder / FILE_NAME
    if not path.exists():
        return {}, f"no snapshot at {path}: streams start fresh"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"unknown snapshot format {document.get('format')!r}"
                             if isinstance(document, dict) else "not a JSON object")
    except (OSError, ValueError) as exc:
        return {}, f"snapshot {path} is corrupt or truncated ({exc}); ignored, streams start fresh"
    if document.get("bundle_sha256") != bundle_sha256:
        return {}, (f"snapshot {path} was taken with another bundle (sha256 "
                    f"{str(document.get('bundle_sha256'))[:12]}…, now {bundle_sha256[:12]}…); "
                    "streams start fresh")
    restored: dict[str, Restored] = {}
    bad = 0
    clean = document.get("clean") is True
    for stream_id, data in document.get("streams", {}).items():
        try:
            entry = restored[stream_id] = decode_stream(stream_id, data, detector)
        except (ValueError, KeyError, TypeError, AssertionError, binascii.Error):
            bad += 1
            continue
        if not clean:
            entry.state.warmup_left = max(entry.state.warmup_left,
                                          detector.settings.warmup_readings)
    age = time.time() - float(document.get("saved_at", time.time()))
    note = f"; {bad} unreadable stream(s) start fresh" if bad else ""
    how = "clean shutdown" if clean else "periodic snapshot after an unclean stop: streams warm up"
    return restored, (f"restored {len(restored)} stream(s) from {path} (saved {age:.0f} s ago, "
                      f"{how}){note}")
