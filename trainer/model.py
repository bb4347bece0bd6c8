"""Build and train the LSTM forecaster (legacy Keras), with visible progress.

The network reads a window of normalised readings and, at every step, forecasts the next
reading: ``x[t+1] ≈ x[t] + Dense(LSTM(x[..t]))``. Forecasting the change rather than the level
keeps slow signals (temperatures) easy and leaves the LSTM to learn how the sensors move
together. Trained statelessly on windows; exported as a one-step streaming model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .config import ModelConfig
from .tfenv import tensorflow


def build(n_features: int, layers: Sequence[int], *, batch: int | None = None,
          steps: int | None = None, residual: bool = True, change_only: bool = False) -> Any:
    """The forecaster; ``batch=1, steps=1`` gives the streaming form the device runs.

    ``residual``: forecast the change (``x[t] + Dense(h)``) rather than the level.
    ``change_only`` (with ``residual``): output the change itself — the exported form, whose
    forecast the agent completes in float (``architecture.output: change``). Both forms share
    the same weights.
    """
    _, keras = tensorflow()
    inputs = keras.Input(batch_shape=(batch, steps, n_features), name="reading")
    hidden = inputs
    for i, units in enumerate(layers):
        hidden = keras.layers.LSTM(units, return_sequences=True, name=f"lstm{i}")(hidden)
    if not residual:
        forecast = keras.layers.Dense(n_features, name="forecast")(hidden)
        return keras.Model(inputs, forecast, name="forecaster")
    change = keras.layers.Dense(n_features, name="change")(hidden)
    if change_only:
        return keras.Model(inputs, change, name="change")
    forecast = keras.layers.Add(name="forecast")([inputs, change])
    return keras.Model(inputs, forecast, name="forecaster")


def windows(sequences: Sequence[np.ndarray], length: int, stride: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (inputs, next-step targets) cut from each sequence separately.

    >>> x, y = windows([np.arange(10, dtype=np.float32).reshape(10, 1)], 4, 3)
    >>> x[:, :, 0].tolist(), y[:, :, 0].tolist()
    ([[0.0, 1.0, 2.0, 3.0], [3.0, 4.0, 5.0, 6.0]], [[1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 7.0]])
    """
    xs, ys = [], []
    for seq in sequences:
        for start in range(0, len(seq) - length, stride):
            xs.append(seq[start:start + length])
            ys.append(seq[start + 1:start + length + 1])
    if not xs:
        raise ValueError(f"no sequence is longer than sequence_length {length}")
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


@dataclass
class TrainingResult:
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0


def train(train_seqs: Sequence[np.ndarray], val_seqs: Sequence[np.ndarray],
          config: ModelConfig, log: Callable[[str], None] = print) -> TrainingResult:
    """Fit the forecaster with early stopping on validation loss; prints one line per epoch."""
    tf, keras = tensorflow()
    keras.utils.set_random_seed(config.seed)
    n_features = train_seqs[0].shape[1]
    x_train, y_train = windows(train_seqs, config.sequence_length, config.window_stride)
    val_len = min(config.sequence_length, min(len(s) for s in val_seqs) - 1)
    x_val, y_val = windows(val_seqs, val_len, max(1, val_len // 2))
    model = build(n_features, config.layers, residual=config.residual)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    log(f"training on {len(x_train)} windows of {config.sequence_length} readings "
        f"({len(train_seqs)} sequence{'' if len(train_seqs) == 1 else 's'}), "
        f"validating on {len(x_val)}")

    class Progress(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            log(f"  epoch {epoch + 1:3d}/{config.epochs}  loss {logs.get('loss', 0):.5f}  "
                f"val_loss {logs.get('val_loss', 0):.5f}  "
                f"({time.perf_counter() - self.start:.1f} s)")
            sys.stdout.flush()

    stop = keras.callbacks.EarlyStopping(monitor="val_loss",
                                         patience=config.early_stopping_patience,
                                         restore_best_weights=True)
    started = time.perf_counter()
    fit = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                    batch_size=config.batch_size, shuffle=True, verbose=0,
                    callbacks=[Progress(), stop])
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    best = int(np.argmin(history["val_loss"])) + 1
    if len(history["val_loss"]) < config.epochs:
        log(f"  early stop: best validation loss at epoch {best}")
    return TrainingResult(model, history, best, time.perf_counter() - started)
