"""A stream that runs where the model was never trained is named, not silently misjudged.

With the training set's scale, a feature whose usual value lies beyond the inputs' clip is fed
to the model as a near-constant: neither the forecast nor the level part can see it move, and
the score stays flat whatever happens (SKAB's experiments against a model trained on its
anomaly-free recording: four features 23-59 spreads away). The detector names such features
once a stream's baseline is complete; the worker warns and counts the streams; the evaluation
says so per file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent import snapshots
from edge_agent.broker import Mosquitto
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.payloads import Topics
from edge_agent.simulator import FEATURES, simulate
from edge_agent.stats import Stats
from edge_agent.worker import Item, Worker
from tests.conftest import DEMO_BUNDLE, Discard
from tests.mqtt_helpers import (TOPIC, AgentProcess, Publisher, Recorder, agent_config,
                                reading_payload, wait_until)

BUNDLE = load_bundle(DEMO_BUNDLE)
TEMPERATURE = BUNDLE.manifest.features.index("temperature")
SHIFT_SPREADS = 20.0  # the shifted stream's temperature: this many training spreads higher


def per_stream(bundle: Bundle) -> Bundle:
    """``bundle`` scaling each stream by its own baseline instead of the training set's."""
    manifest = bundle.manifest
    return Bundle(bundle.path, manifest.model_copy(update={
        "normalisation": manifest.normalisation.model_copy(update={"per_stream": True})}))


def detector(bundle: Bundle = BUNDLE) -> Detector:
    return Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                    DetectorSettings(warmup_readings=5))


def readings(shifted: bool, n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    sim = simulate(n, seed=seed)
    values = sim.values.copy()
    if shifted:
        values[:, TEMPERATURE] += SHIFT_SPREADS * BUNDLE.manifest.normalisation.std[TEMPERATURE]
    return values, sim.t + 1.7e9


def test_a_stream_beyond_the_range_is_named_once_its_baseline_is_complete():
    det = detector()
    baseline = BUNDLE.manifest.normalisation.baseline_readings
    for shifted in (False, True):
        state = det.new_stream("r1/j")
        values, stamps = readings(shifted)
        for row, ts in zip(values[:baseline - 1], stamps):
            det.process(state, row.tolist(), float(ts))
        assert det.beyond_range(state) == []  # not judged before the baseline is complete
        for row, ts in zip(values[baseline - 1:], stamps[baseline - 1:]):
            det.process(state, row.tolist(), float(ts))
        beyond = det.beyond_range(state)
        if not shifted:
            assert beyond == []
            continue
        assert [name for name, _ in beyond] == ["temperature"]
        # the simulated temperature sits within a few spreads of the training mean
        assert SHIFT_SPREADS - 3 < beyond[0][1] < SHIFT_SPREADS + 3


def test_a_stream_scaled_by_its_own_baseline_is_never_beyond_the_range():
    det = detector(per_stream(BUNDLE))
    state = det.new_stream("r1/j")
    values, stamps = readings(shifted=True)
    for row, ts in zip(values, stamps):
        det.process(state, row.tolist(), float(ts))
    assert state.anchor is not None and det.beyond_range(state) == []


def feed(worker: Worker, stream_id: str, shifted: bool, n: int = 400) -> None:
    values, stamps = readings(shifted, n)
    for row, ts in zip(values, stamps):
        worker.handle(Item(stream_id, f"robots/{stream_id}/telemetry", {}, row.tolist(),
                           float(ts), 0.0, 0, 0))


def test_the_worker_warns_counts_and_forgets_streams_beyond_the_range(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(detector(), lambda n, t: [], Discard(), Topics("edge", "a"), Stats(),
                    agent_id="a", max_streams=10, publish_scores=False)
    with caplog.at_level(logging.WARNING, logger="edge_agent.worker"):
        feed(worker, "r1/in", shifted=False)
        feed(worker, "r2/hot", shifted=True)
    assert set(worker.beyond_range) == {"r2/hot"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("stream r2/hot (1 stream(s) beyond")
    assert "temperature (+2" in warnings[0] and "normalisation.per_stream" in warnings[0]
    # a new model's range is another: streams that carry on are judged against it at once,
    # streams that start over once they have left their new warm-up
    worker.swap(detector(per_stream(BUNDLE)), keep_state=True)
    assert worker.beyond_range == {}
    worker.swap(detector(), keep_state=True)
    assert set(worker.beyond_range) == {"r2/hot"}
    worker.swap(detector(), keep_state=False)
    assert worker.beyond_range == {}
    feed(worker, "r2/hot", shifted=True)
    assert set(worker.beyond_range) == {"r2/hot"}
    # a stream that expires is forgotten with the rest of its state
    worker.last_seen["r2/hot"] = 0.0
    assert "r2/hot" in worker.expire(older_than=1.0)
    assert worker.beyond_range == {}


def test_a_restored_stream_is_judged_before_its_next_reading(tmp_path: Path) -> None:
    worker = Worker(detector(), lambda n, t: [], Discard(), Topics("edge", "a"), Stats(),
                    agent_id="a", max_streams=10, publish_scores=False)
    feed(worker, "r2/hot", shifted=True)
    snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    fresh = Worker(detector(), lambda n, t: [], Discard(), Topics("edge", "a"), Stats(),
                   agent_id="a", max_streams=10, publish_scores=False)
    restored, _ = snapshots.read(tmp_path, BUNDLE.sha256, fresh.detector)
    fresh.restore(restored)
    assert set(fresh.beyond_range) == {"r2/hot"}


def test_the_live_agent_names_and_counts_a_stream_beyond_the_range(broker: Mosquitto,
                                                                    tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    recorder = Recorder(broker, topics=("edge-anomaly/agents/test-agent/stats",))
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        for robot, shifted in (("r1", False), ("r2", True)):
            values, stamps = readings(shifted)
            publisher.send_all((TOPIC.format(robot, "j1"), reading_payload(ts, row, FEATURES))
                               for row, ts in zip(values, stamps))
        publisher.close()
        wait_until(lambda: any(m.json()["processed"] == 800 for m in recorder.messages), 30,
                   "the stats after every reading")
        last = [m.json() for m in recorder.messages if m.json()["processed"] == 800][-1]
    finally:
        assert agent.stop() == 0, agent.log()
        recorder.close()
    assert last["streams"] == 2 and last["streams_beyond_range"] == 1
    assert "stream r2/j1 (1 stream(s) beyond the model's range so far): temperature (+2" \
        in agent.log()


def test_the_evaluation_names_the_files_the_model_cannot_judge(tmp_path: Path) -> None:
    from trainer.evaluate import LabelledStream, evaluate_streams, summary_json, \
        summary_markdown

    streams = []
    for name, shifted in (("in-range", False), ("hot", True)):
        values, stamps = readings(shifted)
        streams.append(LabelledStream(name, str(tmp_path / f"{name}.csv"),
                                      list(BUNDLE.manifest.features), values, stamps,
                                      np.zeros(len(values), dtype=int)))
    lines: list[str] = []
    ev = evaluate_streams(BUNDLE, streams, DetectorSettings(warmup_readings=5),
                          ("int8", "float32"), log=lines.append)
    assert [f.beyond_range != [] for f in ev.files] == [False, True]
    assert any(line.strip().startswith("hot: temperature (+2") for line in lines)
    files = {f["name"]: f for f in summary_json(ev)["files"]}
    assert files["in-range"]["beyond_range"] == {}
    assert list(files["hot"]["beyond_range"]) == ["temperature"]
    markdown = summary_markdown(ev)
    section = markdown.split("## Files the model cannot judge", 1)[1].split("## ", 1)[0]
    assert "- `hot`: temperature (+2" in section and "in-range" not in section
