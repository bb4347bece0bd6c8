"""The trainer's configuration (``configs/trainer.yaml``), validated section by section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.bundle import TimeZoneName
from edge_agent.configfile import Section, load_config
from edge_agent.csvdata import CsvSpec


class DataConfig(Section):
    """Where the sensor history is and how to read it."""

    paths: list[str] = Field(default_factory=list, description=(
        "CSV files, folders (all *.csv inside) or glob patterns; each file is one sequence. "
        "Relative paths are relative to the config file."))
    separator: str | None = Field(None, description="Column separator; null detects it.")
    timestamp_column: str | None = Field("auto", description=(
        "Timestamp column name; 'auto' finds timestamp/datetime/time; null: none."))
    features: list[str] | None = Field(None, description=(
        "Feature columns in model order; null: every numeric column except labels."))
    label_columns: list[str] = Field(default_factory=lambda: ["anomaly", "changepoint", "label"],
                                     description="Columns never fed to the model.")
    nan_policy: Literal["drop", "ffill", "fail"] = Field(
        "fail", description="Missing/NaN/Inf cells: drop the row, forward-fill, or fail.")
    min_rows: int = Field(100, ge=2, description="Fewest usable rows a file may have.")
    validation_fraction: float = Field(0.2, gt=0, lt=1, description=(
        "The last part of every file (by time) held out for validation and calibration."))
    sample_period_s: float | None = Field(None, gt=0, description=(
        "Seconds between readings; null infers it from the timestamps."))

    def csv_spec(self) -> CsvSpec:
        return CsvSpec(separator=self.separator, timestamp_column=self.timestamp_column,
                       features=self.features, label_columns=tuple(self.label_columns),
                       nan_policy=self.nan_policy, min_rows=self.min_rows)


class NormalisationConfig(Section):
    """How readings are standardised, and each stream's baseline."""

    per_stream: bool = Field(False, description=(
        "Standardise each stream by its own baseline (its first baseline_readings readings) "
        "instead of the training set's statistics."))
    baseline_readings: int = Field(200, ge=0, description=(
        "Readings that form a stream's baseline (needed by per_stream and the level score)."))
    clip: float = Field(10.0, gt=0, description="Normalised inputs are clipped to ±clip.")
    min_std_fraction: float = Field(0.05, gt=0, description=(
        "Floor of a stream's baseline spread, as a fraction of the training set's spread."))


class ModelConfig(Section):
    """The LSTM forecaster and its training."""

    layers: list[int] = Field(default_factory=lambda: [32], min_length=1,
                              description="LSTM units per layer.")
    residual: bool = Field(True, description=(
        "Forecast the change of each reading (true) or its level (false). Level forecasts "
        "keep relying on how sensors relate, so a frozen sensor stays surprising."))
    sequence_length: int = Field(64, ge=2, description="Training window length (readings).")
    window_stride: int = Field(8, ge=1, description="Readings between training windows.")
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    early_stopping_patience: int = Field(4, ge=1, description=(
        "Stop after this many epochs without validation improvement (best weights kept)."))
    seed: int = 42


class ExportConfig(Section):
    """The int8 export and its parity gate."""

    representative_readings: int = Field(2000, ge=10, description=(
        "Consecutive real training readings fed to the int8 calibration."))
    parity_tolerance: float = Field(0.10, ge=0, description=(
        "Fail the export when the int8 forecast error exceeds the float one by more than "
        "this fraction."))


class RelativeConfig(Section):
    """The relative threshold written into the bundle (see edge_agent.bundle.RelativeThreshold)."""

    window: int = Field(5, ge=1, description="Readings in the recent mean of the score.")
    z: float = Field(2.5, gt=0, description=(
        "Standard deviations above the mean of the stream's earlier scores at which the "
        "recent mean reaches the enter threshold."))
    min_history: int = Field(50, ge=2, description="Earlier scores needed before it speaks.")
    horizon: int | None = Field(None, ge=2, description=(
        "Scores the history remembers (exponential forgetting after this many); null: all "
        "since the stream started. A stream that runs for months should have one (e.g. "
        "60480: a week at 10 s), so a change of normal is learnt in about that time."))
    absolute_margin: float = Field(2.0, ge=1.0, description=(
        "Multiplier on the calibrated enter and exit thresholds: with the history watching "
        "the stream, the calibrated threshold is kept for what is far beyond normal."))
    absolute_for: int | None = Field(None, ge=2, description=(
        "Scores of a stream after which the calibrated threshold steps aside and the "
        "stream's own history alone decides: a threshold calibrated on the first readings "
        "that a burstier stream keeps crossing stops alarming once the history knows the "
        "stream (e.g. 4000: two weeks at 5 minutes). null: both decide for ever."))
    part_z: float | None = Field(None, gt=0, description=(
        "Also judge each part of the score (forecast, level, season, adaptive) against its "
        "own history, at this many standard deviations (higher than z: more histories, more "
        "chances): a part that moved far for itself counts even when a noisier part sets the "
        "score's spread. null: the score's history alone."))


class ThresholdConfig(Section):
    """How the alert threshold is chosen on normal validation scores."""

    method: Literal["quantile", "sweep"] = Field("quantile", description=(
        "quantile: a high quantile of normal scores times a margin; sweep: telemanom-style "
        "mean + z*sd with z chosen by the pruning criterion."))
    quantile: float = Field(0.999, gt=0.5, lt=1)
    margin: float = Field(1.2, ge=1.0, description="Multiplier on the chosen threshold.")
    z_min: float = Field(2.5, gt=0)
    z_max: float = Field(12.0, gt=0)
    z_step: float = Field(0.5, gt=0)
    exit_ratio: float = Field(0.75, gt=0, le=1, description="exit threshold = enter * this.")
    tail_quantile: float | None = Field(None, gt=0.5, le=1, description=(
        "Level, seasonal and adaptive parts: widen a part's scale until this quantile of its "
        "values over every scored training reading, times tail_margin, is no higher than the "
        "enter threshold (for the adaptive part, the final one, with relative's margin). "
        "These parts do not depend on the network, so training readings are fair evidence, "
        "and a slow part needs more readings than a validation part to show its spread. "
        "null: off."))
    tail_margin: float = Field(1.2, ge=1.0, description="Multiplier on tail_quantile's value.")
    relative: RelativeConfig | None = Field(None, description=(
        "Also alert when a stream's recent scores stand far above its own score history, "
        "which keeps learning after calibration (edge_agent.history); the calibrated "
        "thresholds are then raised by relative.absolute_margin. null: off."))

    @model_validator(mode="after")
    def _z_range(self) -> "ThresholdConfig":
        if self.z_max < self.z_min:
            raise ValueError("z_max must not be below z_min")
        return self


class LevelConfig(Section):
    """The level-shift part of the score (distance of the recent mean from the baseline)."""

    enabled: bool = Field(True, description="Score shifts of a stream's mean from its baseline.")
    alpha: float = Field(0.02, gt=0, le=1, description="EWMA weight of the recent mean.")
    track_alpha: float = Field(0.0, ge=0, le=1, description=(
        "EWMA weight with which each feature's baseline follows slow drift while the feature "
        "stays within track_below (in level-scale units); 0: the baseline stays the stream's "
        "first readings."))
    track_below: float = Field(3.0, gt=0, description=(
        "A feature further than this from its baseline is not followed (a fault does not "
        "become the new normal)."))
    rebase_after: int | None = Field(None, ge=1, description=(
        "Readings in a row a feature may stay further than track_below before its recent "
        "mean becomes its baseline (a lasting change of operating point becomes normal and "
        "its alert can end); null: never (a fault alerts for as long as it lasts)."))
    rescale_on_rebase: bool = Field(True, description=(
        "With rebase_after: record the readings' normal reading-to-reading change in the "
        "bundle (level.noise), so that a rebase also widens the feature's level scale by how "
        "much noisier it was while away (a new operating point that is also noisier)."))


class SeasonalConfig(Section):
    """The seasonal part of the score (distance from the stream's usual reading at this time
    of day or week), used when the training history repeats at one of ``periods_s``."""

    enabled: bool = Field(False, description=(
        "Look for a daily/weekly pattern in the training data and score departures from it."))
    periods_s: list[float] = Field(default_factory=lambda: [86400.0, 604800.0], min_length=1,
                                   description=(
        "Candidate periods in seconds; the one the training data repeats at most strongly "
        "wins, if it repeats at least min_autocorrelation and every file spans two periods."))
    min_autocorrelation: float = Field(0.6, gt=0, lt=1, description=(
        "Least correlation between the training readings and the same readings one period "
        "later (mean over files and features) for the seasonal part to be used."))
    max_slots: int = Field(2016, ge=2, description=(
        "Most slots per period (one per sample period up to this; memory per stream is "
        "slots × features floats)."))
    alpha: float = Field(0.05, gt=0, le=1, description="EWMA weight of the seasonal residual.")
    profile_alpha: float = Field(0.3, gt=0, le=1, description=(
        "EWMA weight with which a slot's usual reading follows each new reading there."))
    track_below: float = Field(4.0, gt=0, description=(
        "A feature further than this from its slot's usual reading (in seasonal-scale units) "
        "does not update the profile (an anomaly does not become tomorrow's normal)."))
    timezone: TimeZoneName | None = Field(None, description=(
        "IANA time zone (e.g. Europe/Berlin) whose local clock the slots follow, for patterns "
        "set by people's hours, so they keep their slots through daylight-saving changes; "
        "timestamps must still be true instants (epoch, or ISO with an offset; naive ISO "
        "times are read as UTC). null: the UTC clock."))
    tail_confidence: float | None = Field(0.95, ge=0.5, lt=1, description=(
        "With threshold.tail_quantile: the seasonal part's tail over the training readings "
        "is widened by how much larger a spread measured on that few independent looks "
        "(readings × alpha / (2 - alpha)) may be, with this confidence (upper chi-square "
        "bound; trainer/spread.py). A profile needs a period before it scores, so short "
        "histories show it only a few times. null: the tail as measured."))


class AdaptiveConfig(Section):
    """The adaptive part of the score: a small per-stream forecaster that keeps learning on
    the device (edge_agent.adaptive), for streams that change after the training readings."""

    enabled: bool = Field(False, description=(
        "Score each reading also against a per-stream, per-feature AR forecast refitted after "
        "every reading (recursive least squares with forgetting)."))
    order: int = Field(4, ge=1, le=32, description=(
        "Past readings each forecast uses (cost per reading and feature grows with its "
        "square)."))
    forgetting: float = Field(0.98, gt=0.5, le=1, description=(
        "Weight of the past per reading in the fit (0.98: about the last 50 readings count); "
        "1: never forget."))
    alpha: float = Field(0.1, gt=0, le=1, description=(
        "EWMA weight of the absolute forecast error."))


class ScoringConfig(Section):
    """Scoring parameters calibrated into the bundle."""

    smoothing_alpha: float = Field(0.1, gt=0, le=1, description="EWMA weight of the score.")
    level: LevelConfig = Field(default_factory=LevelConfig)
    seasonal: SeasonalConfig = Field(default_factory=SeasonalConfig)
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    top_features: int = Field(3, ge=1)
    warmup_readings: int = Field(20, ge=0, description=(
        "Readings not scored after a stream starts (use the agent's value)."))


class OutputConfig(Section):
    """Where the bundle is written."""

    dir: str = Field("bundles/model", description="Bundle folder (relative to the config).")
    name: str = Field("model", description="Model name recorded in the manifest.")
    keep_float_model: bool = True
    report: bool = Field(True, description="Draw report.png into the bundle.")


class TrainerConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    normalisation: NormalisationConfig = Field(default_factory=NormalisationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


def load(path: str | Path) -> TrainerConfig:
    """Read a trainer config; relative data and output paths resolve against its folder."""
    config = load_config(path, TrainerConfig)
    base = Path(path).resolve().parent
    data = config.data.model_copy(update={"paths": [str(resolve_path(base, p))
                                                    for p in config.data.paths]})
    output = config.output.model_copy(update={"dir": str(resolve_path(base, config.output.dir))})
    return config.model_copy(update={"data": data, "output": output})


def resolve_path(base: Path, path: str) -> Path:
    """``path`` as the config file in ``base`` means it (``~`` expanded, made absolute)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(os.path.normpath(base / candidate))
