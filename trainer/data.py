"""From CSV history to normalised training and validation sequences.

Each file is a sequence of its own. It is split by time: its first part trains, its last
``validation_fraction`` validates and calibrates (no shuffling across time, so validation is
always "the future" of what the model learned from). The scaler is fitted on the training
parts only. With per-stream normalisation every file is standardised by its own baseline (its
first ``baseline_readings`` rows), exactly as the agent will standardise each live stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Normalisation
from edge_agent.csvdata import Recording, read_recordings, sample_period
from edge_agent.errors import DataError
from edge_agent.normalise import Baseline, Normaliser

from .config import DataConfig, NormalisationConfig


@dataclass
class Split:
    """Raw train and validation parts of every recording, with what was read."""

    recordings: list[Recording]
    train: list[Recording]
    validation: list[Recording]
    features: list[str]
    sample_period_s: float | None


def training_rows(n_rows: int, validation_fraction: float) -> int:
    """How many of a recording's ``n_rows`` rows are its training part (the rest, at least
    one row, validates).

    >>> training_rows(169, 0.25), training_rows(750, 0.25)
    (127, 562)
    """
    return n_rows - max(1, int(round(n_rows * validation_fraction)))


def load_split(config: DataConfig) -> Split:
    """Read the configured files and split each by time."""
    if not config.paths:
        raise DataError("no training data: set data.paths in the config or pass --data")
    recordings = read_recordings(config.paths, config.csv_spec())
    train, validation = [], []
    for rec in recordings:
        cut = training_rows(len(rec), config.validation_fraction)
        n_val = len(rec) - cut
        if cut < 2 or n_val < 2:
            raise DataError(f"too few rows ({len(rec)}) to split into training and validation "
                            f"parts (validation_fraction {config.validation_fraction})",
                            file=rec.path)
        train.append(rec.slice(0, cut))
        validation.append(rec.slice(cut))
    period = config.sample_period_s or sample_period(recordings)
    return Split(recordings, train, validation, list(recordings[0].features), period)


def fit_normalisation(train: list[Recording], config: NormalisationConfig) -> Normalisation:
    """Training-set statistics (and the per-stream floor) as the manifest will hold them."""
    values = np.concatenate([rec.values for rec in train])
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    flat = std <= 1e-12
    if np.any(flat):
        std = np.where(flat, 1.0, std)  # a constant feature: any positive scale will do
    baseline = config.baseline_readings
    if config.per_stream:
        short = [rec.path for rec in train if len(rec) < baseline]
        if short:
            raise DataError(f"shorter than baseline_readings ({baseline}) in its training "
                            "part; lower normalisation.baseline_readings", file=short[0])
    return Normalisation(mean=mean.tolist(), std=std.tolist(),
                         min_std=(std * config.min_std_fraction).tolist(),
                         per_stream=config.per_stream, baseline_readings=baseline,
                         clip=config.clip)


def normalise(recording: Recording, params: Normalisation,
              baseline_from: Recording | None = None) -> np.ndarray:
    """The recording's inputs as the model sees them (float32).

    Per-stream: the baseline is the first ``baseline_readings`` rows of ``baseline_from``
    (the file's start, which for a validation part is its training part).
    """
    normaliser = Normaliser(params)
    if not params.per_stream:
        return normaliser.global_scale.forward_all(recording.values).astype(np.float32)
    source = baseline_from if baseline_from is not None else recording
    baseline = Baseline.empty(len(recording.features))
    for row in source.values[: params.baseline_readings].tolist():
        baseline.add(row)
    return normaliser.scale_from(baseline).forward_all(recording.values).astype(np.float32)
