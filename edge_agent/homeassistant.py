"""Home Assistant MQTT discovery: the agent's streams appear on dashboards without hand work.

Per stream, two entities under one device per agent:

* a ``binary_sensor`` with device class ``problem``: on while the stream is anomalous (from the
  retained status topic), with the latest alert as its attributes;
* a ``sensor`` with the stream's anomaly score (about 1 is normal), its enter threshold and
  what lifted the score (``lifted_by``) as attributes.

Both are available while the agent is (its retained availability topic, also its Last Will).
Discovery configs are retained and republished after every reconnect; the entities of streams
the agent forgets are removed with an empty retained config, as HA's discovery protocol says.
Topics follow ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``.
"""

from __future__ import annotations

import re
from typing import Any

from .payloads import Topics

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def slug(text: str) -> str:
    """An id HA accepts in topics and unique ids.

    >>> slug("r1/elbow joint")
    'r1_elbow_joint'
    """
    return _UNSAFE.sub("_", text)


class Discovery:
    def __init__(self, discovery_prefix: str, topics: Topics, *, agent_id: str, model: str,
                 version: str) -> None:
        self.prefix = discovery_prefix
        self.topics = topics
        self.node = f"edge_anomaly_{slug(agent_id)}"
        self.device = {"identifiers": [self.node], "name": f"edge-anomaly {agent_id}",
                       "manufacturer": "edge-anomaly", "model": model, "sw_version": version}
        self.availability = {"availability_topic": topics.availability,
                             "payload_available": "online", "payload_not_available": "offline"}

    def config_topics(self, stream_id: str) -> tuple[str, str]:
        object_id = slug(stream_id)
        return (f"{self.prefix}/binary_sensor/{self.node}/{object_id}/config",
                f"{self.prefix}/sensor/{self.node}/{object_id}_score/config")

    def configs(self, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The two discovery messages of a stream (topic, retained JSON)."""
        problem_topic, score_topic = self.config_topics(stream_id)
        base = f"{self.node}_{slug(stream_id)}"
        problem = {
            "name": f"{stream_id} anomaly",
            "unique_id": f"{base}_anomaly",
            "device_class": "problem",
            "state_topic": self.topics.status(stream_id),
            "value_template": "{{ 'ON' if value == 'anomalous' else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": self.topics.alerts(stream_id),
            **self.availability,
            "device": self.device,
        }
        score = {
            "name": f"{stream_id} anomaly score",
            "unique_id": f"{base}_score",
            "state_topic": self.topics.score(stream_id),
            "value_template": "{{ value_json.score }}",
            "json_attributes_topic": self.topics.score(stream_id),  # threshold, lifted_by
            "state_class": "measurement",
            "suggested_display_precision": 2,
            **self.availability,
            "device": self.device,
        }
        return [(problem_topic, problem), (score_topic, score)]
