"""An optional Prometheus endpoint with the agent's counters and a latency histogram.

Off by default and bound to localhost by default (``metrics`` config section); it needs the
standard client library (``pip install '.[metrics]'``). The values are read from the same
:class:`~edge_agent.stats.Stats` the stats topic publishes, at scrape time, by a custom
collector — nothing is added to the per-reading path but one bucket increment.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from .errors import ConfigError
from .history import LIFTS
from .stats import LATENCY_BUCKETS

log = logging.getLogger("edge_agent.metrics")


class AgentCollector:
    """Turns a stats snapshot into Prometheus metric families at each scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], latency: Callable[[], tuple[list[int], float]],
                 info: Callable[[], dict[str, str]]) -> None:
        self._snapshot = snapshot
        self._latency = latency
        self._info = info

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, InfoMetricFamily)

        s = self._snapshot()
        yield InfoMetricFamily("edge_agent", "agent version, runtime and bundle", value=self._info())
        for name, help_text, value in (
                ("received", "readings received from the broker", s["received"]),
                ("processed", "readings run through the model", s["processed"]),
                ("unknown_topic", "messages on topics matching no input pattern",
                 s["unknown_topic"]),
                ("dropped", "readings dropped by a full queue", s["dropped"]),
                ("outbox_dropped", "alerts dropped by a full outbox", s["outbox_dropped"]),
                ("reconnects", "reconnections to the broker", s["reconnects"])):
            yield CounterMetricFamily(f"edge_agent_{name}", help_text, value=value)
        rejected = CounterMetricFamily("edge_agent_rejected", "readings rejected, by reason",
                                       labels=["reason"])
        for reason, count in sorted(s["rejected"].items()):
            rejected.add_metric([reason], count)
        yield rejected
        alerts = CounterMetricFamily("edge_agent_alerts", "alert events published, by type",
                                     labels=["type"])
        for kind in ("start", "update", "end"):
            alerts.add_metric([kind], s["alerts"].get(kind, 0))
        yield alerts
        starts = CounterMetricFamily(
            "edge_agent_alert_starts", "episodes opened, by what put the score over the "
            "threshold (calibrated, or the history that lifted it)", labels=["lifted_by"])
        for lift in LIFTS:
            starts.add_metric([lift], s["alert_starts_by_lift"].get(lift, 0))
        yield starts
        for name, help_text, value in (
                ("queue_depth", "readings waiting for the worker", s["queue_depth"]),
                ("streams", "streams with state", s["streams"]),
                ("streams_beyond_range", "streams whose usual values lie beyond the range the "
                 "model was trained on (it cannot judge them there)", s["streams_beyond_range"]),
                ("outbox_pending", "alerts waiting for the broker's acknowledgement",
                 s["outbox_pending"]),
                ("connected", "1 while connected to the broker", int(s["connected"])),
                ("uptime_seconds", "seconds since start", s["uptime_s"])):
            yield GaugeMetricFamily(f"edge_agent_{name}", help_text, value=value)
        counts, total = self._latency()
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily("edge_agent_processing_seconds",
                                    "time to process one reading (normalise, model step, score, "
                                    "decide, publish)", buckets=cumulative, sum_value=total)


def serve(host: str, port: int, collector: AgentCollector) -> Any:
    """Start the HTTP endpoint in a daemon thread; returns the server."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.process_collector import ProcessCollector
    except ImportError:
        raise ConfigError("metrics.enabled needs prometheus-client: pip install "
                          "'edge-anomaly[metrics]'") from None
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return server
