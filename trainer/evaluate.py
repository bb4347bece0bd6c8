"""``edge-trainer evaluate``: stream labelled recordings through the agent's detector and score it.

Nothing here is an offline shortcut. Every file becomes one fresh stream of the agent's own
:class:`~edge_agent.detector.Detector` (the code the worker runs for every MQTT reading), fed
one reading at a time with the detector settings the agent would use
(:func:`edge_agent.app.detector_settings` of an agent config). So the alerts found here are the
alerts a device publishes for the same readings; ``tests/test_evaluate.py`` checks that against
the real daemon.

What counts as a prediction (SKAB's point-wise protocol): a row is predicted anomalous when,
after processing it, the stream's status is ``anomalous`` — an alert episode is open. That is
what an operator sees. For comparison the ``score`` variant flags the rows whose smoothed score
is at or above the enter threshold (no hysteresis, no ``enter_readings``, no cooldown), which
tells whether a miss or a false alarm comes from the score or from the episode rules.

Per file and model (int8, and the float32 export for comparison) it reports point-wise
precision, recall, F1, false alarm rate (FAR) and missed alarm rate (MAR); for each labelled
anomaly segment the delay of the first alarm in it; and where false-alarm rows come from:
episodes that never touch a labelled row ("false episodes") or the lead and tail of episodes
that do, before the labelled anomaly ("lead": a precursor, or an episode that was already open
when the fault began) or after it ("tail": the alarm outlived the fault). Pooled figures add
the confusion counts of all files first.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edge_agent.app import detector_settings
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.config import AgentConfig, load as load_agent_config
from edge_agent.csvdata import CsvSpec, expand_sources, read_csv
from edge_agent.detector import Alert, Detector, DetectorSettings, range_note
from edge_agent.errors import BundleError, DataError
from edge_agent.history import CALIBRATED, LIFTS
from edge_agent.model import StatefulModel

from .metrics import (DetectionDelay, PointMetrics, anomaly_segments, detection_delays,
                      point_metrics)

Log = Callable[[str], None]
MODELS = ("int8", "float32")


# -- settings ------------------------------------------------------------------------------------
def agent_settings(agent_config: str | Path | None = None,
                   defaults: dict[str, Any] | None = None) -> DetectorSettings:
    """The detector settings the agent would run with.

    With ``agent_config`` (an ``edge-agent`` YAML) exactly that file's ``detection`` and
    ``alerts`` sections; otherwise the agent's defaults with ``defaults`` (``{"detection":
    {...}, "alerts": {...}}``) on top. Both go through the agent's own mapping.
    """
    if agent_config is not None:
        return detector_settings(load_agent_config(agent_config))
    sections = {"bundle": ".", "agent_id": "evaluate",
                "input": {"topics": [{"pattern": "evaluate/{stream}"}]}}
    sections.update(defaults or {})
    return detector_settings(AgentConfig.model_validate(sections))


def settings_dict(settings: DetectorSettings) -> dict[str, Any]:
    return asdict(settings)


# -- inputs --------------------------------------------------------------------------------------
@dataclass
class LabelledStream:
    """One recording as the detector will see it.

    ``timestamps`` are what the detector is fed (seconds, strictly increasing); ``labels`` are
    0/1 per row (``None``: unlabelled); rows before ``scored_from`` are streamed (baseline,
    warm-up) but not scored.
    """

    name: str
    path: str
    features: list[str]
    values: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray | None
    scored_from: int = 0

    def __len__(self) -> int:
        return int(self.values.shape[0])


def read_labelled(sources: Iterable[str | Path], features: Sequence[str], label_column: str,
                  *, sample_period_s: float | None = None, scored_from: int = 0,
                  separator: str | None = None) -> list[LabelledStream]:
    """Read labelled CSVs with the project's shared reader (the trainer's and ``replay``'s).

    The label column is never a feature; a file without it is evaluated unlabelled (alerts and
    plot, no metrics). Files without timestamps get ``row * sample_period_s``.
    """
    spec = CsvSpec(separator=separator, features=list(features),
                   label_columns=(label_column,), nan_policy="fail", min_rows=2)
    files = expand_sources(sources)
    streams = []
    for path, name in zip(files, display_names(files)):
        rec = read_csv(path, spec)
        stamps = rec.timestamps
        if stamps is None:
            stamps = np.arange(len(rec), dtype=np.float64) * (sample_period_s or 1.0)
        labels = rec.labels.get(label_column)
        if labels is not None:
            labels = labels.astype(np.float64)
        streams.append(LabelledStream(name, str(path), list(rec.features), rec.values, stamps,
                                      labels, scored_from))
    return streams


def display_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names for files: the file name, with parent folders added while two clash
    (SKAB's ``valve1/0.csv`` and ``valve2/0.csv`` become ``valve1-0`` and ``valve2-0``)."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    depth = 1
    while True:
        names = ["-".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max((len(p) for p in parts), default=1):
            return names
        depth += 1


# -- streaming -----------------------------------------------------------------------------------
@dataclass
class Trace:
    """What one model's detector did over one stream, row by row."""

    model: str
    alarm: np.ndarray  # bool: status "anomalous" after the row (an episode is open)
    scores: np.ndarray  # smoothed score (NaN while warming up)
    warming: np.ndarray  # bool: status "warming_up" after the row
    events: list[tuple[int, Alert]]  # (row, alert) in order
    # features the stream ran beyond the model's range on (Detector.beyond_range), with
    # their distance from the training mean in training spreads
    beyond_range: list[tuple[str, float]] = field(default_factory=list)


def stream_through(detector: Detector, stream: LabelledStream, stream_id: str | None = None
                   ) -> Trace:
    """Feed every row of ``stream`` to one fresh detector stream, exactly as the agent would."""
    state = detector.new_stream(stream_id or stream.name)
    n = len(stream)
    alarm = np.zeros(n, dtype=bool)
    warming = np.zeros(n, dtype=bool)
    scores = np.full(n, np.nan)
    events: list[tuple[int, Alert]] = []
    process = detector.process
    values, stamps = stream.values, stream.timestamps
    for i in range(n):
        outcome = process(state, values[i], float(stamps[i]))
        status = outcome.status
        alarm[i] = status == "anomalous"
        warming[i] = status == "warming_up"
        if outcome.score is not None and status != "warming_up":
            scores[i] = outcome.score
        for alert in outcome.alerts:
            events.append((i, alert))
    return Trace(detector.model.spec.kind, alarm, scores, warming, events,
                 detector.beyond_range(state))


@dataclass(frozen=True)
class Episode:
    """One alert episode: rows ``[start_row, end_row)`` are anomalous (``end_row`` is the row
    whose ``end`` closed it, or the file's length when it was still open)."""

    alert_id: str
    start_row: int
    end_row: int
    closed: bool
    updates: int
    peak: float
    started_by: str | None = None  # the part behind its start: the top feature's basis
    lifted_by: str = CALIBRATED  # what put its start over the threshold: Alert.lift_label


def started_by(alert: Alert) -> str | None:
    """Which part of the score raised an alert: the basis of its top feature (``forecast``,
    ``baseline``, ``season`` or ``adaptive``; ``None`` without contributions)."""
    return alert.top_features[0].basis if alert.top_features else None




def episodes(trace: Trace, n_rows: int) -> list[Episode]:
    found: list[Episode] = []
    open_: dict[str, Any] | None = None
    for row, alert in trace.events:
        if alert.type == "start":
            open_ = {"id": alert.alert_id, "start": row, "updates": 0, "peak": alert.score,
                     "by": started_by(alert), "lift": alert.lift_label}
        elif open_ is not None and alert.type == "update":
            open_["updates"] += 1
            open_["peak"] = max(open_["peak"], alert.score)
        elif open_ is not None and alert.type == "end":
            found.append(Episode(open_["id"], open_["start"], row, True, open_["updates"],
                                 max(open_["peak"], alert.peak_score), open_["by"],
                                 open_["lift"]))
            open_ = None
    if open_ is not None:
        found.append(Episode(open_["id"], open_["start"], n_rows, False, open_["updates"],
                             open_["peak"], open_["by"], open_["lift"]))
    return found


# -- scoring -------------------------------------------------------------------------------------
@dataclass
class ModelResult:
    """One model on one file: metrics over the scored rows, delays, episodes."""

    model: str
    alarm: PointMetrics | None  # episode open (the agent's status)
    score: PointMetrics | None  # score >= enter threshold
    delays: list[DetectionDelay]
    episodes: list[Episode]
    false_episodes: int  # episodes (starting in the scored part) touching no labelled row
    fp_false_episode_rows: int  # false-alarm rows inside those
    fp_lead_rows: int  # false-alarm rows of episodes that touch a labelled row: before it ...
    fp_tail_rows: int  # ... and after it (the alarm outlived the labelled anomaly)

    @property
    def fp_overhang_rows(self) -> int:
        return self.fp_lead_rows + self.fp_tail_rows


def score_trace(stream: LabelledStream, trace: Trace, enter: float) -> ModelResult:
    first = stream.scored_from
    eps = episodes(trace, len(stream))
    if stream.labels is None:
        return ModelResult(trace.model, None, None, [], eps, 0, 0, 0, 0)
    labels = stream.labels[first:]
    alarm = trace.alarm[first:]
    flagged = np.nan_to_num(trace.scores[first:], nan=-math.inf) >= enter
    delays = detection_delays(alarm, labels, stream.timestamps[first:])
    delays = [DetectionDelay(d.start + first, d.end + first,
                             None if d.detected_at is None else d.detected_at + first,
                             d.delay_rows, d.delay_seconds) for d in delays]
    truth = stream.labels.astype(bool)
    false_eps = fp_false = fp_lead = fp_tail = 0
    for ep in eps:
        lo, hi = max(ep.start_row, first), ep.end_row
        if hi <= lo:
            continue
        hits = np.flatnonzero(truth[ep.start_row:ep.end_row])
        if hits.size:
            first_true = ep.start_row + int(hits[0])
            fp_lead += int(np.count_nonzero(~truth[lo:max(lo, first_true)]))
            fp_tail += int(np.count_nonzero(~truth[max(lo, first_true):hi]))
        else:
            fp_false += int(np.count_nonzero(~truth[lo:hi]))
            false_eps += ep.start_row >= first
    return ModelResult(trace.model, point_metrics(alarm, labels), point_metrics(flagged, labels),
                       delays, eps, false_eps, fp_false, fp_lead, fp_tail)


@dataclass
class FileResult:
    stream: LabelledStream
    traces: dict[str, Trace]
    results: dict[str, ModelResult]

    @property
    def beyond_range(self) -> list[tuple[str, float]]:
        """What the stream ran beyond the model's range on (the same for every model: it
        depends on the normalisation alone)."""
        return next(iter(self.traces.values())).beyond_range


@dataclass
class Evaluation:
    """Everything one evaluation found, ready for the summary and the plots."""

    bundle: Bundle
    settings: DetectorSettings
    enter: float
    exit: float
    files: list[FileResult]
    models: list[str]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def pooled(self, model: str, kind: str = "alarm") -> PointMetrics | None:
        parts = [getattr(f.results[model], kind) for f in self.files]
        parts = [p for p in parts if p is not None]
        return PointMetrics.combine(parts) if parts else None

    def delays(self, model: str) -> list[DetectionDelay]:
        return [d for f in self.files for d in f.results[model].delays]


def load_models(bundle: Bundle, models: Sequence[str]) -> dict[str, StatefulModel]:
    """The bundle's int8 model and, if asked, its float32 export (the same interface)."""
    loaded = {}
    for kind in models:
        if kind == "int8":
            loaded[kind] = StatefulModel(bundle.model_path, bundle.manifest.model)
        elif kind == "float32":
            spec, path = bundle.manifest.float_model, bundle.float_model_path
            if spec is None or path is None:
                raise BundleError(f"{bundle.path}: has no float model to compare with (train "
                                  "with output.keep_float_model: true)")
            loaded[kind] = StatefulModel(path, spec)
        else:
            raise ValueError(f"unknown model {kind!r}: expected one of {MODELS}")
    return loaded


def evaluate_streams(bundle: Bundle, streams: Sequence[LabelledStream],
                     settings: DetectorSettings, models: Sequence[str] = ("int8",),
                     log: Log = print) -> Evaluation:
    """Stream every recording through a fresh detector stream per model and score it."""
    started = time.perf_counter()
    loaded = load_models(bundle, models)
    features = list(bundle.manifest.features)
    detectors = {kind: Detector(bundle, model, settings) for kind, model in loaded.items()}
    probe = next(iter(detectors.values()))
    clip = bundle.manifest.normalisation.clip
    files = []
    for i, stream in enumerate(streams, 1):
        if stream.features != features:
            raise DataError(f"features {stream.features} differ from the bundle's {features}",
                            file=stream.path)
        traces = {kind: stream_through(det, stream) for kind, det in detectors.items()}
        results = {kind: score_trace(stream, trace, probe.enter) for kind, trace in traces.items()}
        result = FileResult(stream, traces, results)
        files.append(result)
        log(f"[{i}/{len(streams)}] {stream.name}: {len(stream)} rows; "
            + "; ".join(_brief(kind, r) for kind, r in results.items())
            + f" ({time.perf_counter() - started:.1f} s)")
        if result.beyond_range:
            log(f"      {stream.name}: " + range_note(result.beyond_range, clip))
    return Evaluation(bundle, settings, probe.enter, probe.exit, files, list(models),
                      time.perf_counter() - started)


def _brief(kind: str, result: ModelResult) -> str:
    m = result.alarm
    if m is None:
        return f"{kind} {len(result.episodes)} episode(s)"
    return (f"{kind} F1 {m.f1:.3f} FAR {m.far:.1%} MAR {m.mar:.1%}, "
            f"{len(result.episodes)} episode(s)")


# -- reports -------------------------------------------------------------------------------------
def _rnd(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def delay_summary(delays: Sequence[DetectionDelay]) -> dict[str, Any]:
    found = [d for d in delays if d.detected]
    secs = [d.delay_seconds for d in found if d.delay_seconds is not None]
    return {"segments": len(delays), "detected": len(found),
            "median_delay_s": _rnd(float(np.median(secs)), 1) if secs else None,
            "mean_delay_s": _rnd(float(np.mean(secs)), 1) if secs else None,
            "max_delay_s": _rnd(float(np.max(secs)), 1) if secs else None}


def metrics_dict(m: PointMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: (_rnd(v) if isinstance(v, float) else v) for k, v in m.as_dict().items()}


def _model_json(result: ModelResult, stream: LabelledStream) -> dict[str, Any]:
    stamps = stream.timestamps
    return {
        "alarm": metrics_dict(result.alarm), "score": metrics_dict(result.score),
        "delays": [{"start_row": d.start, "end_row": d.end, "detected_row": d.detected_at,
                    "delay_rows": d.delay_rows, "delay_s": _rnd(d.delay_seconds, 3)}
                   for d in result.delays],
        "episodes": [{"alert_id": e.alert_id, "start_row": e.start_row, "end_row": e.end_row,
                      "closed": e.closed, "updates": e.updates, "peak": _rnd(e.peak),
                      "started_by": e.started_by, "lifted_by": e.lifted_by,
                      "started_at": float(stamps[e.start_row])} for e in result.episodes],
        "false_episodes": result.false_episodes,
        "fp_rows_false_episodes": result.fp_false_episode_rows,
        "fp_rows_lead": result.fp_lead_rows,
        "fp_rows_tail": result.fp_tail_rows,
    }


def summary_json(ev: Evaluation) -> dict[str, Any]:
    m = ev.bundle.manifest
    totals = {}
    for kind in ev.models:
        totals[kind] = {
            "alarm": metrics_dict(ev.pooled(kind, "alarm")),
            "score": metrics_dict(ev.pooled(kind, "score")),
            "delays": delay_summary(ev.delays(kind)),
            "episodes": sum(len(f.results[kind].episodes) for f in ev.files),
            "episodes_by_part": episodes_by_part(ev, kind),
            "episodes_by_lift": episodes_by_lift(ev, kind),
            "false_episodes": sum(f.results[kind].false_episodes for f in ev.files),
            "fp_rows_false_episodes": sum(f.results[kind].fp_false_episode_rows
                                          for f in ev.files),
            "fp_rows_lead": sum(f.results[kind].fp_lead_rows for f in ev.files),
            "fp_rows_tail": sum(f.results[kind].fp_tail_rows for f in ev.files),
        }
    return {
        "bundle": {"name": m.name, "sha256": ev.bundle.sha256, "features": list(m.features)},
        "threshold": {"enter": ev.enter, "exit": ev.exit},
        "settings": settings_dict(ev.settings),
        "prediction": "alarm: the stream's status is 'anomalous' after the row (an alert "
                      "episode is open); score: smoothed score >= enter threshold",
        "models": ev.models, "totals": totals,
        "files": [{"name": f.stream.name, "rows": len(f.stream),
                   "scored_from": f.stream.scored_from,
                   "labelled_rows": None if f.stream.labels is None
                   else int(np.count_nonzero(f.stream.labels[f.stream.scored_from:])),
                   "beyond_range": {name: round(z, 1) for name, z in f.beyond_range},
                   **{kind: _model_json(f.results[kind], f.stream) for kind in ev.models}}
                  for f in ev.files],
        "seconds": round(ev.seconds, 2), **ev.extra,
    }


def episodes_by_part(ev: Evaluation, kind: str) -> dict[str, int]:
    """How many of a model's episodes each part of the score started (most first)."""
    counts = Counter(e.started_by or "unknown" for f in ev.files
                     for e in f.results[kind].episodes)
    return dict(counts.most_common())


def episodes_by_lift(ev: Evaluation, kind: str) -> dict[str, int]:
    """How many of a model's episodes each history lifted over the threshold, or the
    calibrated score alone (most first; see ``Alert.lift_label``)."""
    counts = Counter(e.lifted_by for f in ev.files for e in f.results[kind].episodes)
    return dict(counts.most_common())


def _pct(value: float) -> str:
    return f"{value:.1%}"


def summary_markdown(ev: Evaluation, title: str = "Evaluation") -> str:
    m = ev.bundle.manifest
    s = ev.settings
    lines = [f"# {title}", "",
             (f"Bundle `{m.name}` (sha256 {ev.bundle.sha256[:12]}), thresholds enter "
              f"{ev.enter:.3f} / exit {ev.exit:.3f}; agent settings: warm-up "
              f"{s.warmup_readings}, gap reset {s.gap_reset_s}, enter_readings "
              f"{s.alerts.enter_readings}, exit_readings {s.alerts.exit_readings}, cooldown "
              f"{s.alerts.cooldown_readings}, threshold_scale {s.threshold_scale}."),
             ("Prediction for a row: an alert episode is open after it (the agent's status is "
              "`anomalous`). `score`: the smoothed score is at or above the enter threshold."),
             "", "## Pooled over all files", "",
             ("| model | prediction | precision | recall | F1 | FAR | MAR | segments caught | "
              "median delay | episodes | false episodes | FP rows: false episodes / lead / tail |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in ev.models:
        d = delay_summary(ev.delays(kind))
        episodes_n = sum(len(f.results[kind].episodes) for f in ev.files)
        false_n = sum(f.results[kind].false_episodes for f in ev.files)
        fp_f = sum(f.results[kind].fp_false_episode_rows for f in ev.files)
        fp_l = sum(f.results[kind].fp_lead_rows for f in ev.files)
        fp_t = sum(f.results[kind].fp_tail_rows for f in ev.files)
        for pred in ("alarm", "score"):
            p = ev.pooled(kind, pred)
            if p is None:
                continue
            tail = (f"{d['detected']}/{d['segments']} | {_fmt_s(d['median_delay_s'])} | "
                    f"{episodes_n} | {false_n} | {fp_f} / {fp_l} / {fp_t} |" if pred == "alarm"
                    else "| | | | |")
            lines.append(f"| {kind} | {pred} | {p.precision:.3f} | {p.recall:.3f} | "
                         f"{p.f1:.3f} | {_pct(p.far)} | {_pct(p.mar)} | " + tail)
    for kind in ev.models:
        for what, counts in (("the part of the score that started them",
                              episodes_by_part(ev, kind)),
                             ("what put their start over the threshold",
                              episodes_by_lift(ev, kind))):
            if set(counts) - {CALIBRATED}:  # (said only where a history lifted any)
                lines += ["", f"Episodes by {what} ({kind}): "
                          + ", ".join(f"{name} {n}" for name, n in counts.items()) + "."]
    beyond = [f for f in ev.files if f.beyond_range]
    if beyond:
        clip = m.normalisation.clip
        lines += ["", "## Files the model cannot judge", "",
                  "These streams run where the model was never trained: their figures say "
                  "little about the detector.", ""]
        lines += [f"- `{f.stream.name}`: {range_note(f.beyond_range, clip)}" for f in beyond]
    lines += ["", "## Per file (alarm = episode open)", "",
              "Delay: from the labelled segment's first row to the first alarm in it; "
              "\"open before\": an episode that started before the segment was still open.", "",
              "| file | scored rows | anomalous rows | "
              + " | ".join(f"{k} F1 | {k} FAR | {k} MAR | {k} delay" for k in ev.models)
              + " | episodes (false) |",
              "|---|---|---|" + "---|---|---|---|" * len(ev.models) + "---|"]
    for f in ev.files:
        first = ev.models[0]
        r0 = f.results[first]
        anomalous = "n/a" if f.stream.labels is None else \
            str(int(np.count_nonzero(f.stream.labels[f.stream.scored_from:])))
        cells = []
        for kind in ev.models:
            r = f.results[kind]
            if r.alarm is None:
                cells.append("n/a | n/a | n/a | n/a")
                continue
            alarm = f.traces[kind].alarm
            delays = ", ".join(_fmt_delay(d, alarm) for d in r.delays) or "-"
            cells.append(f"{r.alarm.f1:.3f} | {_pct(r.alarm.far)} | {_pct(r.alarm.mar)} | "
                         f"{delays}")
        lines.append(f"| {f.stream.name} | {len(f.stream) - f.stream.scored_from} | "
                     f"{anomalous} | " + " | ".join(cells)
                     + f" | {len(r0.episodes)} ({r0.false_episodes}) |")
    lines += ["", f"Evaluated {len(ev.files)} file(s) in {ev.seconds:.1f} s.", ""]
    return "\n".join(lines)


def _fmt_delay(d: DetectionDelay, alarm: np.ndarray) -> str:
    """A segment's delay; "open before" when an episode begun before it was still open."""
    if not d.detected:
        return "missed"
    if d.delay_rows == 0 and d.start > 0 and alarm[d.start - 1]:
        return "open before"
    return _fmt_s(d.delay_seconds)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def draw_file(path: Path, result: FileResult, enter: float, exit: float,
              extra_title: str = "") -> Path:
    """One recording: its signals, the score against the thresholds, the labels shaded, the
    alert episodes marked, and a timeline of labels against each model's alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stream = result.stream
    n, n_feat = stream.values.shape
    rows = np.arange(n)
    segments = anomaly_segments(stream.labels) if stream.labels is not None else []
    height = 1.0 * n_feat + 4.2
    fig = plt.figure(figsize=(13, height))  # fixed margins: constrained layout costs seconds
    grid = fig.add_gridspec(n_feat + 2, 1, height_ratios=[1.0] * n_feat + [2.4, 0.9],
                            left=0.13, right=0.99, top=1 - 0.35 / height,
                            bottom=0.45 / height, hspace=0.12)
    axes = [fig.add_subplot(grid[i]) for i in range(n_feat + 2)]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    first_model = next(iter(result.results))
    eps = result.results[first_model].episodes

    def shade(ax: Any) -> None:
        for a, b in segments:
            ax.axvspan(a, b, color="tab:red", alpha=0.12, lw=0)
        if stream.scored_from:
            ax.axvspan(0, stream.scored_from, color="0.6", alpha=0.15, lw=0)

    for i, name in enumerate(stream.features):
        ax = axes[i]
        shade(ax)
        ax.plot(rows, stream.values[:, i], lw=0.7, color="tab:blue")
        ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7, labelbottom=False)
        for ep in eps:
            ax.axvline(ep.start_row, color="tab:orange", lw=0.8)
    r = result.results[first_model]
    summary = "" if r.alarm is None else (f" — {first_model}: F1 {r.alarm.f1:.3f}, FAR "
                                          f"{r.alarm.far:.1%}, MAR {r.alarm.mar:.1%}")
    axes[0].set_title(f"{stream.name}{summary}{extra_title}", fontsize=10)

    ax = axes[n_feat]
    shade(ax)
    colours = {"int8": "tab:blue", "float32": "tab:green"}
    peak = enter
    for kind, trace in result.traces.items():
        ax.plot(rows, trace.scores, lw=0.8 if kind == "int8" else 0.6,
                ls="-" if kind == "int8" else "--", color=colours.get(kind, "k"),
                label=f"score ({kind})")
        if np.isfinite(trace.scores).any():
            peak = max(peak, float(np.nanmax(trace.scores)))
    for ep in eps:
        ax.axvspan(ep.start_row, ep.end_row, ymin=0.0, ymax=0.04, color="tab:orange", lw=0)
        ax.axvline(ep.start_row, color="tab:orange", lw=0.8)
    if any(ep.lifted_by != CALIBRATED for ep in eps):  # which rule opened each episode
        start_scores = result.traces[first_model].scores
        for name, marker in zip(LIFTS, "o^vsDP"):
            starts = [ep.start_row for ep in eps if ep.lifted_by == name]
            if starts:
                ax.scatter(starts, start_scores[starts], marker=marker, s=22, zorder=3,
                           color="tab:orange", edgecolors="k", linewidths=0.4,
                           label=f"start: {name}")
    ax.axhline(enter, color="tab:red", lw=1, label=f"enter {enter:.2f}")
    ax.axhline(exit, color="tab:red", lw=1, ls=":", label=f"exit {exit:.2f}")
    ax.set_yscale("log")
    ax.set_ylim(max(enter * 0.02, 1e-3), peak * 1.5)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=7, labelbottom=False)
    ax.legend(loc="upper left", fontsize=7, ncol=4)

    ax = axes[n_feat + 1]
    lanes = [("label", stream.labels.astype(bool) if stream.labels is not None
              else np.zeros(n, bool), "tab:red")]
    lanes += [(f"{kind} alarm", trace.alarm, colours.get(kind, "k"))
              for kind, trace in result.traces.items()]
    for lane, (_, flags, colour) in enumerate(lanes):
        spans = [(a, b - a) for a, b in anomaly_segments(flags.astype(np.int8))]
        ax.broken_barh(spans, (len(lanes) - lane - 1 + 0.1, 0.8), color=colour)
    ax.set_yticks([len(lanes) - i - 0.5 for i in range(len(lanes))])
    ax.set_yticklabels([name for name, _, _ in lanes], fontsize=7)
    ax.set_ylim(0, len(lanes))
    ax.set_xlim(0, n)
    ax.set_xlabel("row", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    from .report import _shrink

    _shrink(path)
    return path


def write_outputs(ev: Evaluation, out: str | Path, *, title: str = "Evaluation",
                  plots: bool = True, log: Log = print) -> dict[str, Path]:
    """``summary.md``, ``summary.json`` and one PNG per file in ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    if plots:
        for f in ev.files:
            written[f.stream.name] = draw_file(folder / f"{f.stream.name}.png", f, ev.enter,
                                               ev.exit)
    md = folder / "summary.md"
    md.write_text(summary_markdown(ev, title), encoding="utf-8")
    js = folder / "summary.json"
    js.write_text(json.dumps(summary_json(ev), indent=1) + "\n", encoding="utf-8")
    written.update({"summary.md": md, "summary.json": js})
    log(f"wrote {md}, {js}" + (f" and {len(ev.files)} plot(s)" if plots else ""))
    return written


def totals_line(ev: Evaluation) -> str:
    parts = []
    for kind in ev.models:
        p = ev.pooled(kind)
        if p is not None:
            d = delay_summary(ev.delays(kind))
            parts.append(f"{kind}: precision {p.precision:.3f} recall {p.recall:.3f} F1 "
                         f"{p.f1:.3f} FAR {p.far:.1%} MAR {p.mar:.1%}; segments caught "
                         f"{d['detected']}/{d['segments']}, median delay "
                         f"{_fmt_s(d['median_delay_s'])}")
    return "\n".join(parts) or "no labelled rows"


# -- the command ---------------------------------------------------------------------------------
def run(bundle_path: str | Path, data: Sequence[str], *, out: str | Path | None = None,
        label_column: str = "anomaly", use_float: bool = False,
        agent_config: str | Path | None = None, scored_from: int = 0,
        plots: bool = True, log: Log = print) -> Evaluation:
    """``edge-trainer evaluate``: read, stream, score, report."""
    started = time.perf_counter()
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    settings = agent_settings(agent_config)
    streams = read_labelled(data, manifest.features, label_column,
                            sample_period_s=manifest.sample_period_s, scored_from=scored_from)
    models = ["int8", "float32"] if use_float else ["int8"]
    ev = evaluate_streams(bundle, streams, settings, models, log)
    if out is not None:
        write_outputs(ev, out, title=f"Evaluation of {manifest.name}", plots=plots, log=log)
    ev.seconds = time.perf_counter() - started
    log(totals_line(ev))
    log(f"total run time {ev.seconds:.1f} s")
    return ev
