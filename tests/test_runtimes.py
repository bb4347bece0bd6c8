"""Both supported runtimes run the shipped bundle; the one in use is reported.

scripts/test runs this file twice: in the main environment (ai-edge-litert) and in a numpy<2
environment with tflite-runtime as well, where the two are compared.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import load_bundle
from edge_agent.errors import BundleError
from edge_agent.model import StatefulModel, load_runtime

HAS_TFLITE = importlib.util.find_spec("tflite_runtime") is not None
needs_tflite = pytest.mark.skipif(
    not HAS_TFLITE and os.environ.get("EDGE_REQUIRE_TFLITE") != "1",
    reason="tflite-runtime is not installed (it needs numpy<2; scripts/test makes a venv)")


def test_runtime_choice_is_reported_and_validated() -> None:
    runtime = load_runtime()
    assert runtime.name in {"ai-edge-litert", "tflite-runtime"}
    assert runtime.describe().startswith(runtime.name)
    with pytest.raises(BundleError, match="unknown runtime 'onnx'"):
        load_runtime("onnx")


@needs_tflite
def test_tflite_runtime_runs_the_demo_bundle_close_to_litert(demo_bundle_path: Path) -> None:
    bundle = load_bundle(demo_bundle_path)
    xs = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    tflite = StatefulModel(bundle.model_path, bundle.manifest.model, load_runtime("tflite"))
    assert tflite.runtime.name == "tflite-runtime"
    ys = tflite.run(xs)
    assert np.all(np.isfinite(ys))
    if importlib.util.find_spec("ai_edge_litert") is not None:
        litert = StatefulModel(bundle.model_path, bundle.manifest.model, load_runtime("litert"))
        # tflite-runtime 2.14's int8 LSTM kernels differ slightly from current LiteRT's.
        difference = np.abs(litert.run(xs) - ys)
        print(f"tflite-runtime vs ai-edge-litert: mean |diff| {difference.mean():.4f}, "
              f"max {difference.max():.4f} (normalised units)")
        assert difference.mean() < 0.05
