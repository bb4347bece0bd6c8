"""Shared fixtures: the shipped demo bundle, a tiny freshly trained bundle, and markers.

Tests that need TensorFlow skip cleanly where it is absent (the Raspberry Pi smoke suite runs
with the ``agent`` extra only); ``.ci/run`` installs everything so nothing is skipped there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = ROOT / "edge_agent" / "demo_bundle"
HAS_TF = importlib.util.find_spec("tensorflow") is not None and \
    importlib.util.find_spec("tf_keras") is not None

SIM_SEED = 11
needs_tf = pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow (pip install '.[trainer]')")


def pytest_configure(config: pytest.Config) -> None:
    """With EDGE_REQUIRE_ALL=1 (as scripts/test sets) a missing component is an error, so a
    CI run cannot pass by skipping what it was meant to test."""
    if os.environ.get("EDGE_REQUIRE_ALL") == "1":
        from edge_agent.broker import find_mosquitto

        missing = [name for name, ok in (("TensorFlow + tf-keras", HAS_TF),
                                         ("mosquitto", find_mosquitto() is not None)) if not ok]
        if missing:
            raise pytest.UsageError(f"EDGE_REQUIRE_ALL=1 but missing: {', '.join(missing)}")


class Discard:
    """A worker's output that drops everything (``publish_alert``, ``publish``, ``ack``):
    for tests that look at the worker's own state."""

    def publish_alert(self, *args: object) -> None: ...
    def publish(self, *args: object) -> None: ...
    def ack(self, *args: object) -> None: ...


def with_optional_parts(bundle: "Bundle") -> "Bundle":
    """The demo bundle with every part that learns on the device (see
    :func:`edge_agent.learning.with_learning_parts`)."""
    from edge_agent.learning import with_learning_parts

    return with_learning_parts(bundle)


@pytest.fixture(scope="session")
def demo_bundle_path() -> Path:
    return DEMO_BUNDLE


@pytest.fixture(scope="session")
def sim_training_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short normal recordings of different simulated joints."""
    from edge_agent.simulator import write_training_set

    folder = tmp_path_factory.mktemp("sim-train")
    write_training_set(folder, files=3, minutes=2.5, seed=SIM_SEED)
    return folder


def tiny_config(data: Path, out: Path, **model_overrides: object):
    """A small, fast trainer config (a few seconds of training)."""
    from trainer.config import (DataConfig, ExportConfig, ModelConfig, NormalisationConfig,
                                OutputConfig, ScoringConfig, TrainerConfig, LevelConfig)

    model = dict(layers=[16], sequence_length=32, window_stride=8, epochs=8, batch_size=32,
                 early_stopping_patience=3, seed=3)
    model.update(model_overrides)
    return TrainerConfig(
        data=DataConfig(paths=[str(data)], timestamp_column="timestamp", min_rows=100),
        normalisation=NormalisationConfig(baseline_readings=300),
        model=ModelConfig(**model),
        export=ExportConfig(representative_readings=1500),
        scoring=ScoringConfig(level=LevelConfig(alpha=0.005)),
        output=OutputConfig(dir=str(out), name="tiny"),
    )


@pytest.fixture(scope="session")
def tiny_bundle(sim_training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained from scratch by the real pipeline (TensorFlow, int8 export, parity,
    calibration), shared by the tests that need a freshly trained one."""
    if not HAS_TF:
        pytest.skip("needs TensorFlow (pip install '.[trainer]')")
    from trainer.train import run

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    run(tiny_config(sim_training_dir, out), log=lambda line: None)
    return out


@pytest.fixture()
def broker():
    """A private mosquitto on a free loopback port, stopped by its pid afterwards."""
    from edge_agent.broker import Mosquitto, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with Mosquitto() as running:
        yield running
