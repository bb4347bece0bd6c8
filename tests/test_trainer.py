"""The trainer end to end, against real TensorFlow and the real LiteRT runtime (no mocks)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_agent.bundle import load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.simulator import Fault, simulate, training_joint
from tests.conftest import DEMO_BUNDLE, SIM_SEED, needs_tf, tiny_config
from trainer.__main__ import main


@needs_tf
def test_training_writes_a_verified_bundle(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    assert m.features == ["motor_current", "temperature", "vibration", "position_error"]
    assert m.sample_period_s == pytest.approx(0.1)
    assert m.model.kind == "int8" and m.float_model is not None
    assert [t.dtype for t in m.model.state] == ["int8", "int16"]
    assert m.model.sha256 == hashlib.sha256((tiny_bundle / "model.tflite").read_bytes()).hexdigest()
    assert m.parity["int8_mae"] <= m.parity["float_mae"] * (1 + m.parity["tolerance"])
    assert 0 < m.scoring.threshold.exit < m.scoring.threshold.enter
    assert len(m.scoring.error_scale) == 4 and m.scoring.level is not None
    assert m.training["train_rows"] > m.training["validation_rows"] > 0
    assert (tiny_bundle / "report.png").stat().st_size > 10_000
    assert main(["inspect", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "OK (schema 1, sha256 and tensors verified)" in out
    assert "threshold (quantile)" in out


@needs_tf
def test_agent_runtime_matches_tensorflow_interpreter(tiny_bundle: Path) -> None:
    """The device's runtime gives bit-identical int8 forecasts to TensorFlow's interpreter."""
    import tensorflow as tf

    bundle = load_bundle(tiny_bundle)
    spec = bundle.manifest.model
    xs = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    ours = StatefulModel(bundle.model_path, spec).run(xs)
    reference = tf.lite.Interpreter(model_path=str(bundle.model_path), num_threads=1)
    reference.allocate_tensors()
    theirs = []
    for x in xs:
        reference.set_tensor(spec.input.index, x.reshape(1, 1, 4))
        reference.invoke()
        theirs.append(reference.get_tensor(spec.output.index).reshape(-1))
    np.testing.assert_array_equal(ours, np.array(theirs))


@needs_tf
def test_streaming_one_step_at_a_time_equals_the_trained_network(
        sim_training_dir: Path, tmp_path: Path) -> None:
    from trainer.bundle import write_models
    from trainer.config import ModelConfig
    from trainer.data import fit_normalisation, load_split, normalise
    from trainer.model import train
    from trainer.quantize import export, streaming_twin

    config = tiny_config(sim_training_dir, tmp_path / "b")
    split = load_split(config.data)
    norm = fit_normalisation(split.train, config.normalisation)
    train_seqs = [normalise(r, norm) for r in split.train]
    val_seqs = [normalise(r, norm) for r in split.validation]
    model_cfg = ModelConfig(layers=[16], sequence_length=32, epochs=3, seed=1)
    trained = train(train_seqs, val_seqs, model_cfg, log=lambda line: None).model
    exported = export(streaming_twin(trained, 4, [16]), train_seqs, 1000)
    int8, float32 = write_models(tmp_path / "b", exported)
    seq = val_seqs[0][:200]
    batch = trained.predict(seq[None], verbose=0)[0]
    # the exported model outputs the change; the agent adds the reading (in float)
    streamed_float = StatefulModel(tmp_path / "b" / float32.file, float32).run(seq) + seq
    streamed_int8 = StatefulModel(tmp_path / "b" / int8.file, int8).run(seq) + seq
    np.testing.assert_allclose(streamed_float, batch, atol=1e-4)
    assert np.abs(streamed_int8 - batch).mean() < 0.05
    assert np.abs(streamed_int8 - batch).mean() > 0  # it really is a different (int8) model


@needs_tf
def test_injected_faults_score_above_threshold_and_normal_readings_below(tiny_bundle: Path
                                                                         ) -> None:
    bundle = load_bundle(tiny_bundle)
    model = StatefulModel(bundle.model_path, bundle.manifest.model)
    enter = bundle.manifest.scoring.threshold.enter
    flagged, labels = [], []
    # Held-out recordings of the training set's joints (new noise, new motion, new faults).
    for joint, (seed, fault) in enumerate([(301, Fault("bearing", 60, 40)),
                                           (302, Fault("stuck_sensor", 60, 30)),
                                           (303, Fault("overheat", 60, 60))]):
        sim = simulate(1600, 0.1, seed=seed, params=training_joint(SIM_SEED, joint),
                       faults=[fault] if fault else [])
        detector = Detector(bundle, model, DetectorSettings())
        stream = detector.new_stream(str(seed))
        for i, t in enumerate(sim.t):
            outcome = detector.process(stream, sim.values[i], float(t))
            if outcome.status == "warming_up":
                continue
            end = (fault.start_s + fault.duration_s) if fault else 0
            if fault and end <= t < end + 90:
                continue  # the level part's memory: recovery tails are neither
            flagged.append(outcome.score >= enter)
            labels.append(bool(sim.labels[i]))
    flagged_arr, labels_arr = np.array(flagged), np.array(labels)
    true_pos = np.sum(flagged_arr & labels_arr)
    precision = true_pos / max(1, flagged_arr.sum())
    recall = true_pos / labels_arr.sum()
    false_alarm_rate = np.sum(flagged_arr & ~labels_arr) / np.sum(~labels_arr)
    print(f"precision {precision:.3f} recall {recall:.3f} FAR {false_alarm_rate:.4f}")
    assert precision >= 0.9, precision
    assert recall >= 0.6, recall
    assert false_alarm_rate <= 0.02, false_alarm_rate


@needs_tf
def test_parity_gate_fails_the_export(sim_training_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(sim_training_dir, tmp_path / "out", epochs=2).model_dump()
    config["export"] = {"representative_readings": 10, "parity_tolerance": 0.0}
    path = tmp_path / "trainer.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "int8 model rejected" in err and "tolerance 0%" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_training_data_stops_with_its_location(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,a,b\n1,1,2\n2,1,oops\n")
    config = tmp_path / "trainer.yaml"
    config.write_text(json.dumps({"data": {"paths": ["bad.csv"], "min_rows": 2}}))
    assert main(["train", "--config", str(config)]) == 2
    assert f"{bad}, row 3, column 'b': non-numeric value 'oops'" in capsys.readouterr().err


def test_config_typo_names_file_and_key_path(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "trainer.yaml"
    config.write_text("model:\n  layerz: [8]\nscoring:\n  threshold:\n    method: magic\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: model.layerz: unknown key" in err
    assert f"{config}: scoring.threshold.method: Input should be 'quantile' or 'sweep'" in err


def test_shipped_trainer_config_is_valid() -> None:
    from trainer.config import load

    config = load(Path(__file__).parent.parent / "configs" / "trainer.yaml")
    assert config.output.dir.endswith("demo_bundle")


def _flat_history(folder: Path, rows: int = 900) -> Path:
    """A sensor that never moved: one constant feature, like NAB's art_flatline."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,value"] + [f"{i},45.0" for i in range(rows)]
    (folder / "flat.csv").write_text("\n".join(lines) + "\n")
    return folder


@needs_tf
def test_a_flat_history_trains_a_model_that_loads_and_flags_a_step(tmp_path: Path) -> None:
    from trainer.train import run

    out = tmp_path / "bundle"
    run(tiny_config(_flat_history(tmp_path / "data"), out, epochs=2), log=lambda line: None)
    bundle = load_bundle(out)
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        DetectorSettings())
    stream = detector.new_stream("flat")
    enter = bundle.manifest.scoring.threshold.enter
    scores = [detector.process(stream, [45.0 if i < 700 else 47.0], float(i)).score
              for i in range(760)]
    assert max(scores[400:700]) < enter, "a flat stream that stays flat alerts"
    assert max(scores[700:]) >= enter, "a step on a flat stream is not flagged"


@needs_tf
def test_a_model_calibrated_on_a_range_of_zero_is_refused_not_crashed_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the calibration probe the converter writes scales near 1e-41; loading such a
    model would kill the process, so the check before allocation must raise instead."""
    from edge_agent.errors import BundleError
    from trainer import quantize
    from trainer.train import run

    monkeypatch.setattr(quantize, "probe", lambda rows: rows[:0])
    with pytest.raises(BundleError, match="calibrated on a range of zero"):
        run(tiny_config(_flat_history(tmp_path / "data"), tmp_path / "bundle", epochs=2),
            log=lambda line: None)
    # The agent refuses such a model file the same way (a bundle from an older trainer).
    spec = load_bundle(DEMO_BUNDLE).manifest.model
    with pytest.raises(BundleError, match="calibrated on a range of zero"):
        StatefulModel(tmp_path / "bundle" / "model.tflite", spec)
