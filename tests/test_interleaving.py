"""Streams are independent: interleaved through one interpreter and one worker, every stream
gets bit-identical forecasts, scores and alerts to the same stream run alone."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bundle import load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.payloads import Topics
from edge_agent.simulator import Fault, simulate
from edge_agent.stats import Stats
from edge_agent.worker import Item, Worker

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = load_bundle(ROOT / "edge_agent" / "demo_bundle")
MODEL = StatefulModel(BUNDLE.model_path, BUNDLE.manifest.model)
FAULTS = [Fault("bearing", 35, 20), Fault("stuck_sensor", 40, 15), None, Fault("overheat", 30)]
RUNS = {f"s{i}": simulate(700, 0.1, seed=40 + i, faults=[f] if f else [])
        for i, f in enumerate(FAULTS * 2)}


def outputs(order: list[str]) -> dict[str, list[tuple]]:
    detector = Detector(BUNDLE, MODEL, DetectorSettings(warmup_readings=10))
    states = {s: detector.new_stream(s) for s in RUNS}
    position = dict.fromkeys(RUNS, 0)
    seen: dict[str, list[tuple]] = {s: [] for s in RUNS}
    for stream in order:
        i = position[stream]
        position[stream] += 1
        sim = RUNS[stream]
        o = detector.process(states[stream], sim.values[i], 1e9 + float(sim.t[i]))
        seen[stream].append((None if o.expected is None else o.expected.tobytes(), o.score,
                             o.status, tuple((a.type, a.alert_id, a.at) for a in o.alerts)))
    return seen


ALONE = {s: outputs([s] * len(sim.t))[s] for s, sim in RUNS.items()}


@settings(max_examples=5, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_interleaved_streams_equal_streams_alone(seed: int) -> None:
    order = [s for s, sim in RUNS.items() for _ in range(len(sim.t))]
    random.Random(seed).shuffle(order)
    together = outputs(order)
    for stream in RUNS:
        assert together[stream] == ALONE[stream], stream
    assert any(alerts for stream in RUNS for *_, alerts in ALONE[stream])


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, bytes]] = []
        self.acks: list[int] = []

    def publish_alert(self, alert_id: str, kind: str, topic: str, payload: bytes) -> None:
        self.alerts.append((topic, payload))

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        pass

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)


def test_the_worker_interleaving_round_robin_publishes_what_each_stream_alone_would() -> None:
    def worker_alerts(items: list[Item]) -> dict[str, list[bytes]]:
        out = Recorder()
        worker = Worker(Detector(BUNDLE, MODEL, DetectorSettings(warmup_readings=10)),
                        lambda n, t: [], out, Topics("p", "a"), Stats(), agent_id="a",
                        max_streams=100, publish_scores=False)
        for item in items:
            worker.handle(item)
        assert out.acks == [item.mid for item in items]
        grouped: dict[str, list[bytes]] = {}
        for topic, payload in out.alerts:
            grouped.setdefault(topic, []).append(payload)
        return grouped

    def item(stream: str, i: int) -> Item:
        sim = RUNS[stream]
        return Item(stream, f"t/{stream}", {}, sim.values[i], 1e9 + float(sim.t[i]), 0.0,
                    hash((stream, i)) & 0xFFFF, 1)

    round_robin = [item(s, i) for i in range(700) for s in RUNS]
    alone: dict[str, list[bytes]] = {}
    for s in RUNS:
        alone.update(worker_alerts([item(s, i) for i in range(700)]))
    assert worker_alerts(round_robin) == alone
    assert len(alone) >= 4
