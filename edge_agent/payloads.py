"""What the agent publishes, and where: topics and JSON payloads in one place.

Topics (``{prefix}`` from ``output.prefix``):

* ``{prefix}/alerts/{stream}`` — alert events (JSON, QoS 1, not retained); schema in
  ``edge_agent/schemas/alert.schema.json``;
* ``{prefix}/streams/{stream}/status`` — ``warming_up`` | ``normal`` | ``anomalous``
  (plain text, retained, published when it changes);
* ``{prefix}/streams/{stream}/score`` — every reading's score (JSON, QoS 0; only with
  ``output.scores``);
* ``{prefix}/agents/{agent_id}/availability`` — ``online`` (retained) / ``offline`` (retained,
  also the Last Will).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .detector import Alert

ALERT_SCHEMA = "edge-anomaly/alert/1"


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds.

    >>> iso(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Topics:
    prefix: str
    agent_id: str

    def alerts(self, stream_id: str) -> str:
        return f"{self.prefix}/alerts/{stream_id}"

    def status(self, stream_id: str) -> str:
        return f"{self.prefix}/streams/{stream_id}/status"

    def score(self, stream_id: str) -> str:
        return f"{self.prefix}/streams/{stream_id}/score"

    def agent(self, leaf: str) -> str:
        return f"{self.prefix}/agents/{self.agent_id}/{leaf}"

    @property
    def availability(self) -> str:
        return self.agent("availability")


def alert_payload(alert: Alert, *, topic: str, fields: dict[str, str], model_name: str,
                  model_sha256: str, agent_id: str) -> dict[str, Any]:
    """The JSON object of one alert event (see ``schemas/alert.schema.json``)."""
    return {
        "schema": ALERT_SCHEMA,
        "type": alert.type,
        "alert_id": alert.alert_id,
        "stream": alert.stream_id,
        "topic": topic,
        "fields": fields,
        "started_at": iso(alert.started_at),
        "at": iso(alert.at),
        "ended_at": iso(alert.at) if alert.type == "end" else None,
        "duration_s": round(alert.at - alert.started_at, 3),
        "score": round(alert.score, 4),
        "peak_score": round(alert.peak_score, 4),
        "threshold": round(alert.threshold, 4),
        "exit_threshold": round(alert.exit_threshold, 4),
        "readings": alert.readings,
        "top_features": [{"feature": c.feature, "observed": c.observed, "expected": c.expected,
                          "z": round(c.z, 3), "basis": c.basis} for c in alert.top_features],
        "reason": alert.reason,
        "lifted_by": alert.lifted_by,
        "model": {"name": model_name, "sha256": model_sha256},
        "agent_id": agent_id,
    }


def score_payload(ts: float, score: float, threshold: float, status: str,
                  lifted_by: str | None) -> dict[str, Any]:
    """One reading's score for live charts (``output.scores``): with the enter threshold it
    is judged against, so a chart can draw the line without knowing the bundle, and what
    lifted it, as in alerts.

    >>> score_payload(1.7e9, 1.234567, 3.0, "normal", None)
    {'ts': 1700000000.0, 'score': 1.2346, 'threshold': 3.0, 'status': 'normal', 'lifted_by': None}
    """
    return {"ts": round(ts, 3), "score": round(score, 4), "threshold": round(threshold, 4),
            "status": status, "lifted_by": lifted_by}


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
