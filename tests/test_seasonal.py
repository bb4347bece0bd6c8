"""The seasonal part of the score: its arithmetic by hand, the trainer's period detection, and
end to end a daily signal whose peak fails to come one day (caught by the seasonal part, and
named as such in the alert), plus ``edge-trainer recalibrate``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_agent.bundle import Bundle, Scoring, SeasonalScoring, Smoothing, Threshold, load_bundle
from edge_agent.csvdata import Recording
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.scoring import Scorer, ScoreState
from tests.conftest import needs_tf, with_optional_parts
from trainer import benchmarks
from trainer.__main__ import main
from trainer.config import SeasonalConfig
from trainer.seasonality import detect, lag_correlation

HOUR = 3600.0


def scorer(**season: float | str | None) -> Scorer:
    params = dict(period_s=4.0, slots=4, alpha=0.5, profile_alpha=0.5, track_below=2.0,
                  scale=[1.0])
    params.update(season)
    return Scorer(Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
                          seasonal=SeasonalScoring(**params),
                          threshold=Threshold(enter=3, exit=2, method="fixed")))


def test_the_first_period_fills_the_profile_then_residuals_are_smoothed_and_learned() -> None:
    s, state = scorer(), ScoreState()
    for ts, x in enumerate([0.0, 1.0, 2.0, 3.0]):
        assert s.seasonal_shift(state, [x], float(ts)) is None
    assert state.profile.tolist() == [[0.0], [1.0], [2.0], [3.0]] and state.seasonal is None
    # Slot 0 expects 0; reading 1: residual 1, smoothed 0 + 0.5 * (1 - 0) = 0.5 (scale 1);
    # |0.5| < 2, so the profile follows: 0 + 0.5 * (1 - 0) = 0.5.
    assert s.seasonal_shift(state, [1.0], 4.0) == ([0.5], [0.0])
    assert state.profile[0].tolist() == [0.5] and state.seasonal == [0.5]
    # Slot 1 expects 1; reading 1: residual 0, smoothed 0.5 + 0.5 * (0 - 0.5) = 0.25.
    assert s.seasonal_shift(state, [1.0], 5.0) == ([0.25], [1.0])
    assert state.profile[1].tolist() == [1.0]


def test_a_departure_beyond_track_below_does_not_teach_the_profile() -> None:
    s, state = scorer(alpha=1.0, scale=[2.0]), ScoreState()
    for ts in range(4):
        s.seasonal_shift(state, [0.0], float(ts))
    shift, usual = s.seasonal_shift(state, [10.0], 4.0)  # 10 / scale 2 = 5 >= 2
    assert shift == [5.0] and usual == [0.0] and state.profile[0].tolist() == [0.0]
    shift, _ = s.seasonal_shift(state, [3.0], 5.0)  # 3 / 2 = 1.5 < 2: learned
    assert shift == [1.5] and state.profile[1].tolist() == [1.5]


def _shifts_across_a_clock_change(zone: str | None) -> tuple[list[float], list[float]]:
    """A shop's lights: on from 08:00 to 18:00 Berlin time, read hourly for a week each side
    of 2026-03-29, when Berlin's clocks go forward (01:00 UTC). The seasonal shift of every
    reading after the first day, before and after the change (unsmoothed, scale 1)."""
    from zoneinfo import ZoneInfo

    s, state = scorer(period_s=86400.0, slots=24, alpha=1.0, profile_alpha=0.5,
                      track_below=2.0, timezone=zone), ScoreState()
    change = datetime(2026, 3, 29, 1, tzinfo=timezone.utc).timestamp()
    before, after = [], []
    for hour in range(-7 * 24, 7 * 24):
        ts = change + hour * HOUR
        local = datetime.fromtimestamp(ts, ZoneInfo("Europe/Berlin"))
        out = s.seasonal_shift(state, [1.0 if 8 <= local.hour < 18 else 0.0], ts)
        if out is not None:
            (before if ts < change else after).append(out[0][0])
    return before, after


def test_slots_on_a_local_clock_keep_a_pattern_people_set_through_daylight_saving() -> None:
    before, after = _shifts_across_a_clock_change("Europe/Berlin")
    assert max(map(abs, before + after)) == 0.0  # every reading is what its slot expects
    before, after = _shifts_across_a_clock_change(None)  # UTC slots: the pattern moves an hour
    assert max(map(abs, before)) == 0.0 and max(map(abs, after)) == 1.0


def test_the_agent_config_puts_the_slots_on_its_own_clock(tmp_path: Path) -> None:
    """``detection.seasonal_timezone`` in an agent config file, through the agent's own
    mapping to DetectorSettings, over the bundle's UTC: the deployment's clock, the bundle
    itself untouched; a reload with the same setting keeps the profiles."""
    from tests.test_snapshots import BUNDLE, fed_worker
    from trainer.evaluate import agent_settings

    bundle = with_season(with_optional_parts(BUNDLE), period_s=86400.0, slots=24)
    model = StatefulModel(bundle.model_path, bundle.manifest.model)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "bundle": str(bundle.path), "input": {"topics": ["plant/{stream}"]},
        "detection": {"seasonal_timezone": "Asia/Tokyo"}}))
    settings = agent_settings(config)
    assert settings.seasonal_timezone == "Asia/Tokyo"
    utc = Detector(bundle, model)
    tokyo = Detector(bundle, model, settings)
    assert bundle.manifest.scoring.seasonal.timezone is None
    assert utc.scorer.seasonal.timezone is None
    assert tokyo.scorer.seasonal.timezone == "Asia/Tokyo"
    slots = 24  # hourly: Tokyo's clock is 9 slots ahead
    for ts in (0.0, 1.7e9, 1.7e9 + 0.4 * 86400):
        assert tokyo.scorer.slot(ts) == (utc.scorer.slot(ts) + 9) % slots

    worker = fed_worker(None, streams=1, bundle=bundle)
    worker.swap(tokyo, keep_state=True)  # UTC profiles do not fit Tokyo's slots
    state = next(iter(worker.streams.values()))
    assert state.score.profile is None
    state.score.profile = np.zeros((slots, len(bundle.manifest.features)))
    worker.swap(Detector(bundle, model, DetectorSettings(seasonal_timezone="Asia/Tokyo")),
                keep_state=True)
    assert state.score.profile is not None  # same clock: kept


def test_an_unknown_time_zone_stops_the_trainer_with_its_key_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "trainer.yaml"
    config.write_text("scoring:\n  seasonal:\n    timezone: Mars/Olympus_Mons\n")
    assert main(["train", "--config", str(config)]) == 2
    assert (f"{config}: scoring.seasonal.timezone: Value error, unknown time zone "
            "'Mars/Olympus_Mons'") in capsys.readouterr().err


def _daily(days: int, period_s: float = HOUR, noise: float = 0.2, seed: int = 0,
           missing_day: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hourly readings of a daily square wave (10 from 08:00 to 18:00, else 0); on
    ``missing_day`` the peak does not come."""
    rng = np.random.default_rng(seed)
    stamps = 1.7e9 - (1.7e9 % 86400) + np.arange(days * 86400 / period_s) * period_s
    hour = (stamps % 86400) / 3600
    values = np.where((hour >= 8) & (hour < 18), 10.0, 0.0)
    if missing_day is not None:
        values[int(missing_day * 86400 / period_s):int((missing_day + 1) * 86400 / period_s)] = 0
    return stamps, values + noise * rng.standard_normal(len(values))


def _recording(stamps: np.ndarray | None, values: np.ndarray) -> Recording:
    return Recording(path="r.csv", features=["value"], values=values.reshape(-1, 1),
                     timestamps=stamps, rows=np.arange(len(values)))


def test_the_trainer_finds_a_daily_period_and_only_where_there_is_one() -> None:
    config = SeasonalConfig(enabled=True)
    stamps, values = _daily(9)
    season, notes = detect([_recording(stamps, values)], HOUR, config)
    assert season is not None and season.period_s == 86400 and season.slots == 24
    assert season.autocorrelation > 0.95
    assert any("604800 s: 1 file(s) shorter than two periods" in n for n in notes)

    noise = np.random.default_rng(1).standard_normal(len(values))
    season, notes = detect([_recording(stamps, noise)], HOUR, config)
    assert season is None and "too weak" in notes[0]
    assert detect([_recording(None, values)], None, config)[0] is None
    # max_slots caps the slots, not the period.
    capped = detect([_recording(stamps, values)], HOUR, config.model_copy(
        update={"max_slots": 6}))[0]
    assert capped is not None and (capped.period_s, capped.slots) == (86400, 6)
    assert lag_correlation(np.ones((10, 1)), 2) == 0.0  # a constant feature: no evidence


def _write_nab_daily(folder: Path) -> tuple[Path, Path, int]:
    """A NAB-format file: 60 days of hourly readings, the peak missing on day 45."""
    stamps, values = _daily(60, missing_day=45, seed=4)
    path = folder / "artificialWithAnomaly" / "daily.csv"
    path.parent.mkdir(parents=True)
    fmt = "%Y-%m-%d %H:%M:%S"
    when = [datetime.fromtimestamp(t, timezone.utc) for t in stamps]
    path.write_text("timestamp,value\n" + "".join(
        f"{w.strftime(fmt)},{v:.4f}\n" for w, v in zip(when, values)))
    start = when[45 * 24] - timedelta(hours=4)
    labels = folder / "combined_windows.json"
    labels.write_text(json.dumps({"artificialWithAnomaly/daily.csv": [
        [start.strftime(fmt) + ".000000", (start + timedelta(hours=36)).strftime(fmt)
         + ".000000"]]}))
    return folder, labels, 45 * 24


def _config(path: Path, seasonal: bool) -> Path:
    path.write_text(yaml.safe_dump({
        "data": {"paths": [], "features": ["value"], "min_rows": 50,
                 "validation_fraction": 0.25, "timestamp_column": "timestamp"},
        "normalisation": {"per_stream": True, "baseline_readings": 48},
        "model": {"layers": [4], "sequence_length": 16, "window_stride": 2, "epochs": 3,
                  "batch_size": 16, "seed": 1},
        "export": {"representative_readings": 200, "parity_tolerance": 10.0},
        # The forecast part alone (no level part), with or without the seasonal part.
        # Tokyo's clock (no daylight saving) cuts the same hourly slots 9 hours later.
        "scoring": {"level": {"enabled": False},
                    "seasonal": {"enabled": seasonal, "timezone": "Asia/Tokyo"}},
        "output": {"dir": "unused", "name": "daily", "report": False}}))
    return path


@pytest.mark.slow
@needs_tf
def test_a_missing_daily_peak_is_caught_by_the_seasonal_part(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, labels, anomaly_row = _write_nab_daily(tmp_path / "nab")
    out = tmp_path / "out"
    result = benchmarks.run_nab(data, labels, out=out, config=_config(tmp_path / "s.yaml", True),
                                jobs=1, plots=False, log=lambda line: None)
    bundle = load_bundle(out / "bundles" / "daily")
    season = bundle.manifest.scoring.seasonal
    assert season is not None
    assert (season.period_s, season.slots, season.timezone) == (86400, 24, "Asia/Tokyo")
    assert result["totals"]["start"]["int8"]["standard"]["tp"] == 1
    assert main(["inspect", str(out / "bundles" / "daily")]) == 0
    assert "seasonal period 86400 s in 24 slots, Asia/Tokyo clock" in capsys.readouterr().out

    # The alert that catches it names the seasonal part: the reading was far from what this
    # hour of the day usually reads.
    files, _ = benchmarks.nab_files(data, labels)
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        DetectorSettings(warmup_readings=20))
    stream = detector.new_stream("daily")
    starts = []
    for i, (ts, v) in enumerate(zip(files[0].clock, files[0].values)):
        for alert in detector.process(stream, [float(v)], float(ts)).alerts:
            if alert.type == "start":
                starts.append((i, alert))
    caught = [(i, a) for i, a in starts if anomaly_row <= i < anomaly_row + 24]
    assert caught and caught[0][1].top_features[0].basis == "season"
    assert caught[0][1].top_features[0].expected > 5  # it expected the peak

    # Recalibrated without the seasonal part (no training): same model and state key, and
    # the missing peak goes unseen (a day without edges surprises a forecaster less than the
    # edges of every normal day).
    plain = tmp_path / "plain"
    assert main(["recalibrate", str(out / "bundles" / "daily"), "--config",
                 str(_config(tmp_path / "p.yaml", False)), "--data",
                 str(out / "train-data" / "daily.csv"), "--out", str(plain)]) == 0
    again = load_bundle(plain)
    assert again.manifest.scoring.seasonal is None
    assert again.sha256 == bundle.sha256 and again.manifest.state_key == bundle.manifest.state_key
    assert "recalibrated" in again.manifest.training
    without = benchmarks.run_nab(data, labels, out=tmp_path / "again",
                                 config=_config(tmp_path / "p.yaml", False),
                                 reuse=out / "bundles", recalibrate=True, plots=False,
                                 log=lambda line: None)
    assert load_bundle(tmp_path / "again" / "bundles" / "daily").manifest.scoring.seasonal is None
    assert without["totals"]["start"]["int8"]["standard"]["tp"] == 0


@pytest.mark.parametrize("change", [{"slots": 50}, {"timezone": "Europe/Berlin"}],
                         ids=["other-slots", "other-clock"])
def test_a_reload_that_keeps_state_starts_the_profile_over_only_if_the_slots_changed(
        change: dict[str, int | str]) -> None:
    from tests.test_snapshots import BUNDLE, fed_worker

    worker = fed_worker(None, streams=1, bundle=with_optional_parts(BUNDLE))
    state = next(iter(worker.streams.values()))
    profile, lstm = state.score.profile, state.lstm
    assert profile is not None

    def detector_for(bundle):
        return Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model))

    same = with_optional_parts(BUNDLE)  # a recalibration with the same period and slots
    worker.swap(detector_for(same), keep_state=True)
    assert state.score.profile is profile and state.lstm is lstm

    worker.swap(detector_for(with_season(same, **change)), keep_state=True)
    assert state.score.profile is None and state.score.seasonal is None
    assert state.lstm is lstm and state.score.baseline is not None  # the rest carries on


def with_season(bundle: Bundle, **changes: float | str) -> Bundle:
    """The bundle with its seasonal part changed (as a recalibration might)."""
    season = bundle.manifest.scoring.seasonal
    assert season is not None
    scoring = bundle.manifest.scoring.model_copy(
        update={"seasonal": season.model_copy(update=changes)})
    return bundle.with_scoring(scoring)


def test_a_feature_that_stays_away_long_enough_takes_its_recent_mean_as_baseline() -> None:
    """``level.rebase_after`` (by hand: recent = the reading, scale 1, track_below 2)."""
    from edge_agent.bundle import LevelScoring

    s = Scorer(Scoring(error_scale=[1.0, 1.0], smoothing=Smoothing(alpha=1.0),
                       level=LevelScoring(alpha=1.0, scale=[1.0, 1.0], track_below=2.0,
                                          rebase_after=3),
                       threshold=Threshold(enter=3, exit=2, method="fixed")))
    state, anchor = ScoreState(), [0.0, 0.0]
    assert s.level_shift(state, [5.0, 5.0], anchor) == [5.0, 5.0] and state.away == [1, 1]
    assert s.level_shift(state, [5.0, 1.0], anchor) == [5.0, 1.0] and state.away == [2, 0]
    # Third reading in a row away for the first feature: its baseline becomes 5 (the second
    # feature came back in between, so it starts counting again).
    assert s.level_shift(state, [5.0, 5.0], anchor) == [5.0, 5.0] and state.away == [0, 1]
    assert state.baseline == [5.0, 0.0]
    assert s.level_shift(state, [5.0, 5.0], anchor) == [0.0, 5.0]
