"""Workstation trainer: sensor history (CSV) → LSTM forecaster → int8 TFLite bundle.

It imports the agent's own code (CSV reader, runtime, scoring) so that parity checks,
calibration and evaluation measure exactly what the device will do.
"""

from edge_agent import __version__

__all__ = ["__version__"]
