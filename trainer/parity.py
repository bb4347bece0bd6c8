"""The parity gate: is the int8 model as good a forecaster as the float one?

Both exported models run statefully over every validation sequence, one reading at a time,
through the agent's own runtime code (:class:`edge_agent.model.StatefulModel`). The export
fails when the int8 forecast error exceeds the float one by more than the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_agent.bundle import ModelFile
from edge_agent.errors import EdgeError
from edge_agent.model import StatefulModel


class ParityError(EdgeError):
    """The int8 model is too much worse than the float model."""


@dataclass
class Parity:
    float_mae: float
    int8_mae: float
    deviation_mean: float
    deviation_max: float
    excess: float
    tolerance: float
    readings: int
    keras_float_deviation: float | None = None

    @property
    def ok(self) -> bool:
        return self.excess <= self.tolerance

    def summary(self) -> str:
        return (f"forecast MAE (normalised): float {self.float_mae:.4f}, int8 {self.int8_mae:.4f} "
                f"({self.excess:+.1%}, tolerance {self.tolerance:.0%}); int8 vs float deviation "
                f"mean {self.deviation_mean:.4f}, max {self.deviation_max:.4f} over "
                f"{self.readings} readings"
                + ("" if self.keras_float_deviation is None else
                   f"; float stream vs Keras batch max {self.keras_float_deviation:.2e}"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def forecasts(model: StatefulModel, sequences: Sequence[np.ndarray], outputs_change: bool
              ) -> list[np.ndarray]:
    """One-step forecasts of every sequence, each from the zero state (a change model's
    output is added to the reading, as the agent does)."""
    return [model.run(seq) + seq if outputs_change else model.run(seq) for seq in sequences]


def check(folder: Path, int8: ModelFile, float32: ModelFile,
          sequences: Sequence[np.ndarray], tolerance: float,
          reference: Sequence[np.ndarray] | None = None, outputs_change: bool = False) -> Parity:
    """Compare the streamed int8 and float forecasts; ``reference`` (the Keras network's own
    forecasts over each whole sequence) checks that streaming equals batch for the float model.
    """
    q = forecasts(StatefulModel(folder / int8.file, int8), sequences, outputs_change)
    f = forecasts(StatefulModel(folder / float32.file, float32), sequences, outputs_change)
    err_q = np.concatenate([np.abs(p[:-1] - s[1:]) for p, s in zip(q, sequences)])
    err_f = np.concatenate([np.abs(p[:-1] - s[1:]) for p, s in zip(f, sequences)])
    dev = np.concatenate([np.abs(a - b) for a, b in zip(q, f)])
    float_mae, int8_mae = float(err_f.mean()), float(err_q.mean())
    return Parity(float_mae=float_mae, int8_mae=int8_mae, deviation_mean=float(dev.mean()),
                  deviation_max=float(dev.max()),
                  excess=int8_mae / float_mae - 1.0 if float_mae > 0 else 0.0,
                  tolerance=tolerance, readings=int(err_q.shape[0]),
                  keras_float_deviation=None if reference is None else float(max(
                      np.abs(a - b).max() for a, b in zip(f, reference))))
