"""Garbage in, nothing out: 10,000+ generated bad payloads through the agent's real message path
(the agent's on_messages → topic mapper → parser → queue → worker) never raise, are all counted by
reason, and leave the good stream's forecasts and scores exactly as a run without them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import config as agent_config
from edge_agent.app import Agent
from edge_agent.messages import REASONS
from edge_agent.readbuffer import Incoming
from edge_agent.simulator import FEATURES, Fault, simulate

ROOT = Path(__file__).resolve().parent.parent
GOOD_TOPIC = "robots/r1/joints/j1/telemetry"
SIM = simulate(420, 0.1, seed=3, faults=[Fault("bearing", 32)])
GOOD = [json.dumps({"ts": 1.7e9 + float(t), **dict(zip(FEATURES, map(float, row)))}).encode()
        for t, row in zip(SIM.t, SIM.values)]
EXAMPLES, PER_EXAMPLE = 200, 50


def make_agent(tmp: Path) -> Agent:
    path = tmp / "agent.yaml"
    path.write_text(json.dumps({
        "agent_id": "fuzz", "bundle": str(ROOT / "edge_agent" / "demo_bundle"),
        "input": {"topics": ["robots/{robot}/joints/{joint}/telemetry"],
                  "payload": {"max_bytes": 2048}},
        "detection": {"warmup_readings": 5},
        "state": {"dir": str(tmp / "state")}}))
    return Agent(agent_config.load(path))


def run(agent: Agent, traffic: list[tuple[str, bytes]]) -> list[tuple[tuple[float, ...], float | None]]:
    """Push traffic through on_messages and the worker; the good stream's state after each
    good reading (forecast bytes, smoothed score)."""
    trace = []
    for mid, (topic, payload) in enumerate(traffic, start=1):
        agent.on_messages([Incoming(topic, payload, 1, mid)])
        for item in agent.queue.get_batch(10, timeout=0):
            agent.worker.handle(item)
            if item.values is None:  # a rejected message, acknowledged in its turn
                continue
            state = agent.worker.streams[item.stream_id]
            if item.stream_id == "r1/j1":
                trace.append((tuple(state.prediction), state.score.smoothed))
    return trace


@pytest.fixture(scope="module")
def clean_trace(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[tuple[float, ...], float | None]]:
    agent = make_agent(tmp_path_factory.mktemp("clean"))
    trace = run(agent, [(GOOD_TOPIC, p) for p in GOOD])
    agent.outbox.close()
    assert any(score is not None and score > agent.detector.enter for _, score in trace)
    return trace


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                    st.just(10 ** 400), st.just(1e308), st.booleans(), st.none(),
                    st.text(max_size=5))
json_junk = st.recursive(numbers, lambda c: st.lists(c, max_size=6) | st.dictionaries(
    st.sampled_from(FEATURES + ["ts", "extra"]), c, max_size=6), max_leaves=15)
bad_payload = st.one_of(
    st.binary(max_size=300),
    json_junk.map(lambda v: json.dumps(v).encode()),
    st.integers(1000, 5000).map(lambda n: b"[" * n + b"]" * n),          # deep nesting
    st.integers(2049, 4000).map(lambda n: b"[" + b"1," * (n // 2) + b"1]"),  # oversize
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4)
      .map(lambda v: json.dumps(v).encode()),                             # NaN/Inf arrays
    st.dictionaries(st.sampled_from(FEATURES), st.floats(), min_size=1, max_size=3)
      .map(lambda d: json.dumps(d).encode()),                             # missing fields
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
topics = st.one_of(st.just(GOOD_TOPIC), st.just("robots/r1/joints/j1/other"),
                   st.just("robots/r2/joints/j9/telemetry"), st.text(min_size=1, max_size=20))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.integers(0, len(GOOD)), topics, bad_payload),
                min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_bad_payloads_are_counted_and_change_nothing(tmp_path_factory: pytest.TempPathFactory,
                                                     clean_trace: list, injections: list) -> None:
    agent = make_agent(tmp_path_factory.mktemp("fuzz"))
    parser = agent.parser
    inserts: dict[int, list[tuple[str, bytes]]] = {}
    expected_rejects: Counter[str] = Counter()
    unknown = 0
    for position, topic, payload in injections:
        route = agent.mapper.match(topic)
        if route is None:
            unknown += 1
        else:
            reason = parser.parse(payload)
            if not isinstance(reason, str):
                continue  # a generated payload that happens to be a valid reading: skip it
            expected_rejects[reason] += 1
        inserts.setdefault(position, []).append((topic, payload))
    traffic = []
    for i in range(len(GOOD) + 1):
        traffic += inserts.get(i, [])
        if i < len(GOOD):
            traffic.append((GOOD_TOPIC, GOOD[i]))
    trace = run(agent, traffic)
    agent.outbox.close()
    assert trace == clean_trace
    assert dict(agent.stats.rejected) == dict(expected_rejects)
    assert set(agent.stats.rejected) <= set(REASONS)
    assert agent.stats.unknown_topic == unknown
    assert list(agent.worker.streams) == ["r1/j1"]
