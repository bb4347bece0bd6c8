"""The bundle contract: the shipped demo bundle loads; damaged bundles are refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import load_bundle
from edge_agent.errors import BundleError
from edge_agent.model import StatefulModel


@pytest.fixture()
def bundle_copy(demo_bundle_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_bundle_path, tmp_path / "bundle"))


def test_demo_bundle_loads_and_runs(demo_bundle_path: Path) -> None:
    bundle = load_bundle(demo_bundle_path)
    manifest = bundle.manifest
    assert manifest.features == ["motor_current", "temperature", "vibration", "position_error"]
    assert bundle.model_path.stat().st_size < 64 * 1024
    assert {t.dtype for t in manifest.model.state} == {"int8", "int16"}
    model = StatefulModel(bundle.model_path, manifest.model)
    state = model.zero_state()
    y = model.step(np.zeros(4, dtype=np.float32), state)
    assert len(y) == 4 and np.all(np.isfinite(y))
    assert any(not np.array_equal(a, b) for a, b in zip(state, model.zero_state()))


def test_tampered_model_is_refused(bundle_copy: Path) -> None:
    data = bytearray((bundle_copy / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 .* does not match"):
        load_bundle(bundle_copy)


def test_truncated_model_is_refused(bundle_copy: Path) -> None:
    data = (bundle_copy / "model.tflite").read_bytes()
    (bundle_copy / "model.tflite").write_bytes(data[:1000])
    with pytest.raises(BundleError, match="truncated or replaced"):
        load_bundle(bundle_copy)


def test_truncated_manifest_is_refused(bundle_copy: Path) -> None:
    text = (bundle_copy / "manifest.json").read_text()
    (bundle_copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="not valid JSON.*truncated or corrupt"):
        load_bundle(bundle_copy)


def test_missing_pieces_are_named(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "nowhere")
    (bundle_copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match="model.tflite: missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(bundle_copy)


def edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_incompatible_schema_version_is_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_bundle(bundle_copy)


def test_inconsistent_manifest_names_the_key(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["normalisation"].update(mean=[0.0]))
    with pytest.raises(BundleError, match="normalisation.mean has 1 values for 4 features"):
        load_bundle(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m.update(surprise=1))
    with pytest.raises(BundleError, match="surprise: Extra inputs are not permitted"):
        load_bundle(bundle_copy)


def test_a_level_noise_that_does_not_fit_the_features_is_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["scoring"]["level"].update(noise=[0.3, 0.3]))
    with pytest.raises(BundleError, match="scoring.level.noise has 2 values for 4 features"):
        load_bundle(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m["scoring"]["level"].update(noise=[0.3, 0.3, 0.0, 1]))
    with pytest.raises(BundleError, match="scoring.level.noise must be positive"):
        load_bundle(bundle_copy)


def test_an_adaptive_part_that_does_not_fit_the_features_is_refused(bundle_copy: Path) -> None:
    part = {"order": 4, "forgetting": 0.98, "alpha": 0.1, "scale": [1.0, 1.0]}
    edit_manifest(bundle_copy, lambda m: m["scoring"].update(adaptive=part))
    with pytest.raises(BundleError, match="scoring.adaptive.scale has 2 values for 4 features"):
        load_bundle(bundle_copy)
    part.update(scale=[1.0, 1.0, 1.0, -1.0])
    edit_manifest(bundle_copy, lambda m: m["scoring"].update(adaptive=part))
    with pytest.raises(BundleError, match="scoring.adaptive.scale must be positive"):
        load_bundle(bundle_copy)
    part.update(scale=[1.0] * 4, forgetting=0.3)
    edit_manifest(bundle_copy, lambda m: m["scoring"].update(adaptive=part))
    with pytest.raises(BundleError, match="scoring.adaptive.forgetting"):
        load_bundle(bundle_copy)


def test_manifest_that_does_not_describe_the_model_is_refused(bundle_copy: Path) -> None:
    def wrong_dtype(m: dict) -> None:
        m["model"]["state"][1]["dtype"] = "int8"

    edit_manifest(bundle_copy, wrong_dtype)
    bundle = load_bundle(bundle_copy)  # files are intact; the description is not
    with pytest.raises(BundleError, match=r"tensor \d+ \(state lstm0/c\) is int16"):
        StatefulModel(bundle.model_path, bundle.manifest.model)


def test_wrong_zero_state_is_refused(bundle_copy: Path) -> None:
    def wrong_zero(m: dict) -> None:
        m["model"]["state"][0]["zero"][0] += 1

    edit_manifest(bundle_copy, wrong_zero)
    bundle = load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="differs from the manifest's zero state"):
        StatefulModel(bundle.model_path, bundle.manifest.model)
