"""Write the bundle folder: model files first, then the manifest that vouches for them.

The manifest is written last and atomically, so a bundle whose export failed half-way has no
manifest and the agent refuses it instead of loading a mismatched model.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.bundle import (MANIFEST_NAME, SCHEMA_VERSION, Architecture, Manifest, ModelFile,
                               Normalisation, Scoring, derive_state_key, write_manifest)

from .quantize import Exported, describe

MODEL_FILE = "model.tflite"
FLOAT_MODEL_FILE = "model_float.tflite"
KERAS_WEIGHTS_FILE = "keras_weights.npz"


def write_keras_weights(folder: Path, weights: list[Any]) -> Path:
    """The trained network's weights (numpy arrays, no pickle) for benchmarks and fine-tuning;
    ``trainer.model.build`` with the manifest's architecture takes them back."""
    path = folder / KERAS_WEIGHTS_FILE
    import numpy as np

    np.savez(path, *weights)
    return path


def write_models(folder: Path, exported: Exported) -> tuple[ModelFile, ModelFile]:
    """Write both ``.tflite`` files (removing any stale manifest) and describe them.

    The float model is needed for the parity gate even when it is not kept in the bundle.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    specs = []
    for name, data, kind in ((MODEL_FILE, exported.int8, "int8"),
                             (FLOAT_MODEL_FILE, exported.float32, "float32")):
        path = folder / name
        path.write_bytes(data)
        specs.append(describe(str(path), hashlib.sha256(data).hexdigest(), len(data), kind))
    return specs[0], specs[1]


def manifest(*, name: str, features: list[str], sample_period_s: float | None,
             normalisation: Normalisation, architecture: Architecture, model: ModelFile,
             float_model: ModelFile | None, scoring: Scoring, training: dict[str, Any],
             parity: dict[str, Any]) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION, name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        trainer_version=__version__, features=features, sample_period_s=sample_period_s,
        normalisation=normalisation, architecture=architecture, model=model,
        float_model=float_model, scoring=scoring, training=training, parity=parity,
        state_key=derive_state_key(model, normalisation))


def finish(folder: Path, content: Manifest, keep_float: bool) -> Path:
    """Drop the float model if not kept, then write the manifest (last)."""
    if not keep_float:
        (folder / FLOAT_MODEL_FILE).unlink(missing_ok=True)
    return write_manifest(folder, content)
