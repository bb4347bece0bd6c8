"""One reading through the whole decision path: admit → normalise → score → decide → step.

This is the single code path that turns a reading into a score and alerts. The agent's worker
calls it for every MQTT reading; the trainer calls it to calibrate thresholds and to evaluate
recordings. So a figure measured offline is the device's figure.

Order of work for one reading of a stream:

1. admission: duplicates and out-of-order readings are dropped untouched; a long gap resets
   the stream (an open episode ends first);
2. per-stream baseline: while it is being learned the reading only feeds it;
3. normalise with the stream's scale;
4. score the reading against the forecast made one step earlier (smoothed), the stream's
   baseline (level), for a seasonal bundle its usual reading at this time of the period, and
   for an adaptive one the forecast of the stream's own learning forecaster (which then learns
   from the reading); with a relative threshold, lift the score when it (or, with
   ``part_z``, one of its parts) is far above the stream's own history of it;
5. decide: after warm-up, the episode state machine may emit ``start``/``update``/``end``;
6. step the LSTM with the reading, keeping the forecast of the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Sequence

import numpy as np

from . import alerts as episodes
from .alerts import AlertSettings, EventType
from .bundle import Bundle, Scoring
from .history import CALIBRATED, Relative
from .model import StatefulModel
from .normalise import Baseline, Normaliser, Scale, Vector
from .scoring import Scorer, ScoreState
from .streams import Admission, StreamState, admit

Status = Literal["warming_up", "normal", "anomalous"]


@dataclass(frozen=True)
class DetectorSettings:
    """The agent-side knobs of detection (the model-side ones come from the manifest)."""

    warmup_readings: int = 20
    gap_reset_s: float | None = None
    alerts: AlertSettings = field(default_factory=AlertSettings)
    threshold_scale: float = 1.0
    seasonal_timezone: str | None = None  # the clock of the seasonal slots, over the bundle's


@dataclass(frozen=True)
class Contribution:
    """How one feature contributed to a score: what was seen, what the model expected."""

    feature: str
    observed: float
    expected: float  # the forecast, the baseline mean, the slot's usual reading or the
    #                  adaptive forecast
    z: float  # the largest of its parts (forecast error, level, seasonal, adaptive shift)
    basis: str = "forecast"  # "forecast", "baseline", "season" or "adaptive": what
    #                          ``expected`` is


@dataclass(frozen=True)
class Alert:
    """An episode event, before the agent adds its identity and topic fields."""

    type: EventType
    alert_id: str
    stream_id: str
    at: float
    started_at: float
    score: float
    peak_score: float
    threshold: float
    exit_threshold: float
    readings: int
    top_features: tuple[Contribution, ...]
    reason: str | None = None
    lifted_by: str | None = None  # which history lifted ``score`` over its calibrated value
    #                               (``history.SCORE_HISTORY`` or a part's); None: not lifted

    @property
    def lift_label(self) -> str:
        """What set the score, for counting: ``lifted_by``, or ``calibrated`` when no history
        lifted it (always so without a relative threshold); one of ``history.LIFTS``."""
        return self.lifted_by or CALIBRATED


class Outcome(NamedTuple):
    """What one reading did to its stream (a tuple: it is made for every reading)."""

    admission: Admission
    status: Status
    score: float | None = None
    raw_score: float | None = None
    alerts: tuple[Alert, ...] = ()
    errors: Vector | None = None
    shift: Vector | None = None
    prediction: Vector | None = None
    scale: Scale | None = None
    seasonal: Vector | None = None
    normalised: Vector | None = None  # the reading as the model and the scorer saw it
    adaptive: Vector | None = None  # the adaptive part per feature (None: none yet)
    lifted_by: str | None = None  # which history lifted ``score`` (None: as calibrated)

    @property
    def expected(self) -> np.ndarray | None:
        """The forecast of this reading in raw units (what the model expected to see)."""
        if self.prediction is None or self.scale is None:
            return None
        return self.scale.inverse(self.prediction)


def range_note(beyond: Sequence[tuple[str, float]], clip: float) -> str:
    """One line on the features a stream runs beyond the model's range on, and what to do.

    >>> range_note([("flow", -54.7)], 10.0)
    "flow (-55σ): usually this far from the training mean, beyond the inputs' clip at ±10σ, so the model cannot see it move; train on this machine's history or set normalisation.per_stream: true"
    >>> range_note([("a", 12.0), ("b", -30.0), ("c", 11.0)], 10.0)[:36]
    'a (+12σ), b (-30σ) and c (+11σ): usu'
    """
    items = [f"{name} ({z:+.0f}σ)" for name, z in beyond]
    named = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return (f"{named}: usually this far from the training mean, beyond the inputs' clip at "
            f"±{clip:g}σ, so the model cannot see {'it' if len(items) == 1 else 'them'} move; "
            f"train on this machine's history or set normalisation.per_stream: true")


def on_clock(scoring: Scoring, zone: str | None) -> Scoring:
    """The bundle's scoring with its seasonal slots on ``zone``'s clock, if a zone is given.
    The clock is a deployment's choice: profiles are learned on the device, so a model trained
    on one site's data serves a site in another zone."""
    if zone is None or scoring.seasonal is None:
        return scoring
    return scoring.model_copy(update={
        "seasonal": scoring.seasonal.model_copy(update={"timezone": zone})})


def seasonal_note(scoring: Scoring, zone: str | None) -> str:
    """The seasonal part as a deployment runs it, on its clock; or that there is none, naming
    ``zone`` as unused if one was set (a setting silently ignored looks like a working one).

    >>> from edge_agent.bundle import SeasonalScoring, Smoothing, Threshold
    >>> plain = Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
    ...                 threshold=Threshold(enter=3, exit=2, method="fixed"))
    >>> seasonal_note(plain, "Europe/Berlin")
    'no seasonal part (detection.seasonal_timezone unused)'
    >>> daily = plain.model_copy(update={"seasonal": SeasonalScoring(
    ...     period_s=86400, slots=288, alpha=0.05, profile_alpha=0.3, track_below=4,
    ...     scale=[1.0])})
    >>> seasonal_note(daily, None), seasonal_note(daily, "Europe/Berlin")
    ('seasonal period 86400 s in 288 slots, UTC clock', 'seasonal period 86400 s in 288 slots, Europe/Berlin clock')
    """
    season = on_clock(scoring, zone).seasonal
    if season is None:
        return "no seasonal part" + (" (detection.seasonal_timezone unused)" if zone else "")
    return (f"seasonal period {season.period_s:g} s in {season.slots} slots, "
            f"{season.timezone or 'UTC'} clock")


def adaptive_note(scoring: Scoring) -> str:
    """The adaptive part in a few words, for logs and ``inspect``.

    >>> from edge_agent.bundle import AdaptiveScoring, Smoothing, Threshold
    >>> plain = Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
    ...                 threshold=Threshold(enter=3, exit=2, method="fixed"))
    >>> adaptive_note(plain)
    'no adaptive part'
    >>> adaptive_note(plain.model_copy(update={"adaptive": AdaptiveScoring(
    ...     order=4, forgetting=0.98, alpha=0.1, scale=[0.5])}))
    'adaptive AR(4) forecaster, forgetting 0.98, error smoothing alpha 0.1'
    """
    part = scoring.adaptive
    if part is None:
        return "no adaptive part"
    return (f"adaptive AR({part.order}) forecaster, forgetting {part.forgetting:g}, error "
            f"smoothing alpha {part.alpha:g}")


def parts_note(scoring: Scoring, zone: str | None) -> str:
    """The parts that learn on the device, as a deployment runs them."""
    return f"{seasonal_note(scoring, zone)}; {adaptive_note(scoring)}"


class Detector:
    """Scores readings of any number of streams with one model and one set of parameters."""

    def __init__(self, bundle: Bundle, model: StatefulModel,
                 settings: DetectorSettings = DetectorSettings()) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.model = model
        self.settings = settings
        self.features = list(manifest.features)
        self.normaliser = Normaliser(manifest.normalisation)
        self.scorer = Scorer(on_clock(manifest.scoring, settings.seasonal_timezone))
        self.outputs_change = manifest.architecture.output == "change"
        self.enter = manifest.scoring.threshold.enter * settings.threshold_scale
        self.exit = manifest.scoring.threshold.exit * settings.threshold_scale
        relative = manifest.scoring.threshold.relative
        self.relative = Relative(relative) if relative is not None else None

    # -- streams ---------------------------------------------------------------------------
    def new_stream(self, stream_id: str) -> StreamState:
        state = StreamState(stream_id=stream_id, lstm=self.model.zero_state(),
                            warmup_left=self.settings.warmup_readings)
        if self.normaliser.baseline_readings > 0:
            state.baseline = Baseline.empty(len(self.features))
        if not self.normaliser.per_stream:
            state.scale = self.normaliser.global_scale
        return state

    def beyond_range(self, state: StreamState) -> list[tuple[str, float]]:
        """The features this stream runs beyond the model's range on, once its baseline is
        complete: each name with its usual value's distance from the training mean in
        training spreads (:meth:`Normaliser.beyond_range`). The model cannot judge those
        features there; the agent warns, and the evaluation says so per file."""
        baseline = state.baseline
        if baseline is None or state.anchor is None:
            return []
        return [(self.features[i], z) for i, z in self.normaliser.beyond_range(baseline)]

    def reset(self, state: StreamState) -> Alert | None:
        """Start the stream over (LSTM state, warm-up, score memory); keep its baseline,
        seasonal profile (slots follow timestamps, so a gap does not misalign them) and the
        adaptive forecaster's fit (not its lags: the readings before a gap are not the next
        one's).

        Returns the ``end`` of an episode that was open, which the caller must publish.
        """
        ended = None
        if state.episode.active:
            ended = self._event(state, "end", state.last_ts or 0.0, reason="reset")
            episodes.close(state.episode, self.settings.alerts)
        state.lstm = self.model.zero_state()
        state.prediction = None
        state.warmup_left = self.settings.warmup_readings
        fit = state.score.adaptive
        if fit is not None:
            fit.forget_past()
        state.score = ScoreState(profile=state.score.profile, adaptive=fit)
        state.episode.above = state.episode.below = 0
        state.resets += 1
        return ended

    def adopt(self, state: StreamState, previous: "Detector") -> None:
        """Take over a stream that keeps its state across a model reload: a seasonal profile
        made for other slots (or for none), or an adaptive forecaster of another order (or
        none), starts over; everything else carries on."""
        old = previous.scorer.seasonal
        if old is None or not self.scorer.profile_fits(old.period_s, old.slots, old.timezone):
            state.score.profile = state.score.seasonal = None
        fit = state.score.adaptive
        if fit is not None and not self.scorer.adaptive_fits(fit.order):
            state.score.adaptive = state.score.adaptive_error = None

    def _learn_baseline(self, state: StreamState, values: Vector) -> None:
        baseline = state.baseline
        assert baseline is not None
        baseline.add(values)
        if baseline.count < self.normaliser.baseline_readings:
            return
        if self.normaliser.per_stream:
            state.scale = self.normaliser.scale_from(baseline)
        assert state.scale is not None
        state.anchor = state.scale.forward(baseline.mean)

    # -- one reading -----------------------------------------------------------------------
    def process(self, state: StreamState, values: Sequence[float], ts: float,
                has_own_timestamp: bool = True) -> Outcome:
        """Feed one raw reading (one float per feature, in manifest order) to its stream.

        ``values`` is best a list of floats (what the payload parser gives); anything else
        (a numpy row of a recording) is converted first."""
        if type(values) is not list:
            values = np.asarray(values, dtype=np.float64).tolist()
        admission = admit(state, ts, has_own_timestamp, self.settings.gap_reset_s)
        if admission is Admission.DUPLICATE or admission is Admission.OUT_OF_ORDER:
            return Outcome(admission, self.status(state))
        events: tuple[Alert, ...] = ()
        if admission is Admission.RESET:
            ended = self.reset(state)
            if ended is not None:
                events = (ended,)
        state.last_ts = ts
        state.readings += 1
        learning = state.baseline is not None and state.anchor is None
        if learning:
            self._learn_baseline(state, values)
            if state.scale is None:  # per-stream inputs wait for the stream's own scale
                return Outcome(admission, "warming_up", alerts=events)
            learning = state.anchor is None

        scale = state.scale
        assert scale is not None
        x = scale.forward(values)
        score = raw = z = shift = season = lifted_by = None
        scorer = self.scorer
        adaptive = scorer.adaptive_shift(state.score, x) if scorer.has_adaptive else None
        prediction = state.prediction
        if prediction is not None:
            z = scorer.errors(x, prediction)
            raw = scorer.raw(z)
            score = surprise = scorer.smooth(state.score, raw)
            level = seasonal = adapted = None
            if scorer.has_level and state.anchor is not None:
                shift = scorer.level_shift(state.score, x, state.anchor)
                level = scorer.raw(shift)
                if level > score:
                    score = level
            if scorer.has_seasonal:
                season = scorer.seasonal_shift(state.score, x, ts)
                if season is not None:
                    seasonal = scorer.raw(season[0])
                    if seasonal > score:
                        score = seasonal
            if adaptive is not None:
                adapted = scorer.raw(adaptive[0])
                if adapted > score:
                    score = adapted
            if self.relative is not None:
                score, lifted_by = self.relative.lift(state.history, score, self.enter,
                                                      (surprise, level, seasonal, adapted),
                                                      state.part_histories)  # in PARTS order
            if state.warmup_left == 0 and not learning:
                kind = episodes.advance(state.episode, self.settings.alerts, score, ts,
                                        enter=self.enter, exit=self.exit,
                                        stream_id=state.stream_id)
                if kind is not None:
                    events += (self._event(state, kind, ts, score, values,
                                           scale.inverse(prediction), z, shift, season,
                                           adaptive, lifted_by=lifted_by),)
        if state.warmup_left > 0:
            state.warmup_left -= 1
        forecast = self.model.step(x, state.lstm)
        state.prediction = ([a + b for a, b in zip(x, forecast)] if self.outputs_change
                            else forecast)
        if learning or state.warmup_left > 0 or prediction is None:
            status: Status = "warming_up"
        else:
            status = "anomalous" if state.episode.active else "normal"
        return Outcome(admission, status, score, raw, events, z, shift, prediction, scale,
                       season[0] if season is not None else None, x,
                       adaptive[0] if adaptive is not None else None, lifted_by)

    def _contributions(self, state: StreamState, values: Vector, forecast: np.ndarray,
                       errors: Vector, shift: Vector | None,
                       season: tuple[Vector, Vector] | None,
                       adaptive: tuple[Vector, Vector] | None) -> tuple[Contribution, ...]:
        """The top features, each judged by the largest of its parts: against the forecast
        (a surprise), the stream's baseline (a level shift), its usual reading at this time
        of the period (a seasonal shift) or its adaptive forecast (a surprise for the stream
        as it has lately been)."""
        strength, expected = np.abs(errors), np.asarray(forecast, dtype=np.float64)
        basis = np.array(["forecast"] * len(strength), dtype=object)
        parts = []
        if shift is not None and state.score.baseline is not None and state.scale is not None:
            parts.append(("baseline", shift, state.scale.inverse(state.score.baseline)))
        if season is not None and state.scale is not None:
            parts.append(("season", season[0], state.scale.inverse(season[1])))
        if adaptive is not None and state.scale is not None:
            parts.append(("adaptive", adaptive[0], state.scale.inverse(adaptive[1])))
        for name, part, reference in parts:
            stronger = np.abs(part) > strength
            strength = np.where(stronger, np.abs(part), strength)
            expected = np.where(stronger, reference, expected)
            basis[stronger] = name
        return tuple(Contribution(self.features[i], float(values[i]), float(expected[i]),
                                  float(strength[i]), str(basis[i]))
                     for i in self.scorer.top_features(strength))

    @staticmethod
    def _learning_baseline(state: StreamState) -> bool:
        return state.baseline is not None and state.anchor is None

    def status(self, state: StreamState) -> Status:
        if state.warmup_left > 0 or state.prediction is None or self._learning_baseline(state):
            return "warming_up"
        return "anomalous" if state.episode.active else "normal"

    def _event(self, state: StreamState, kind: EventType, at: float, score: float | None = None,
               values: Vector | None = None, forecast: np.ndarray | None = None,
               z: Vector | None = None, shift: Vector | None = None,
               season: tuple[Vector, Vector] | None = None,
               adaptive: tuple[Vector, Vector] | None = None,
               reason: str | None = None, lifted_by: str | None = None) -> Alert:
        ep = state.episode
        top: tuple[Contribution, ...] = ()
        if z is not None and values is not None and forecast is not None:
            top = self._contributions(state, values, forecast, z, shift, season, adaptive)
        if score is None:
            score = state.score.smoothed if state.score.smoothed is not None else 0.0
        return Alert(
            type=kind, alert_id=ep.alert_id or "", stream_id=state.stream_id, at=at,
            started_at=ep.started_at if ep.started_at is not None else at,
            score=float(score), peak_score=ep.peak, threshold=self.enter,
            exit_threshold=self.exit, readings=ep.readings, top_features=top,
            reason=reason or ("recovered" if kind == "end" else None), lifted_by=lifted_by)
