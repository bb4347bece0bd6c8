"""Topic patterns → MQTT subscriptions and stream ids."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.config import TopicConfig
from edge_agent.topics import Route, TopicMapper


def test_patterns_map_topics_to_streams_and_fields() -> None:
    mapper = TopicMapper([
        TopicConfig(pattern="robots/{robot}/joints/{joint}/telemetry"),
        TopicConfig(pattern="plant/{line}/pump/{pump}", stream_id="pump-{pump}@{line}"),
        TopicConfig(pattern="lab/sensor"),
    ])
    assert mapper.subscriptions() == ["robots/+/joints/+/telemetry", "plant/+/pump/+",
                                      "lab/sensor"]
    assert mapper.match("robots/r1/joints/j2/telemetry") == Route("r1/j2",
                                                                  {"robot": "r1", "joint": "j2"})
    assert mapper.match("plant/L1/pump/7") == Route("pump-7@L1", {"line": "L1", "pump": "7"})
    assert mapper.match("lab/sensor") == Route("lab/sensor", {})
    for topic in ("robots/r1/joints/j2", "robots/r1/joints/j2/telemetry/x", "lab/sensor2",
                  "plant/L1/pump/", "robots//joints/j2/telemetry"):
        assert mapper.match(topic) is None, topic


def test_shared_subscriptions() -> None:
    mapper = TopicMapper([TopicConfig(pattern="a/{x}")], share_group="detectors")
    assert mapper.subscriptions() == ["$share/detectors/a/+"]


@pytest.mark.parametrize("pattern, message", [
    ("a/+/b", "use {name} placeholders"),
    ("a/#", "use {name} placeholders"),
    ("a//b", "empty level"),
    ("a/{x}/{x}", "repeats a placeholder"),
    ("a/pre{x}", "must be a whole level"),
])
def test_bad_patterns_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TopicConfig(pattern=pattern)


def test_stream_id_template_may_only_use_pattern_placeholders() -> None:
    with pytest.raises(ValidationError, match="does not define"):
        TopicConfig(pattern="a/{x}", stream_id="{y}")
