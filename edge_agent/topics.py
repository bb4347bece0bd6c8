"""Map MQTT topics to stream ids, and derive the subscriptions that cover them.

A pattern such as ``robots/{robot}/joints/{joint}/telemetry`` names one topic level per
placeholder. The agent subscribes to ``robots/+/joints/+/telemetry`` and turns the topic
``robots/r1/joints/elbow/telemetry`` into the stream ``r1/elbow`` (or into whatever the
``stream_id`` template says) plus the fields ``{"robot": "r1", "joint": "elbow"}``, which
alerts carry so dashboards can group by them.

>>> m = TopicMapper([TopicConfig(pattern="robots/{robot}/joints/{joint}/telemetry")])
>>> m.subscriptions()
['robots/+/joints/+/telemetry']
>>> m.match("robots/r1/joints/elbow/telemetry")
Route(stream_id='r1/elbow', fields={'robot': 'r1', 'joint': 'elbow'})
>>> m.match("robots/r1/status") is None
True
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

from .config import TopicConfig

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CACHE_LIMIT = 100_000


class Route(NamedTuple):
    stream_id: str
    fields: dict[str, str]


class _Pattern:
    def __init__(self, config: TopicConfig) -> None:
        self.names = _PLACEHOLDER.findall(config.pattern)
        parts = []
        for level in config.pattern.split("/"):
            parts.append("([^/]+)" if _PLACEHOLDER.fullmatch(level) else re.escape(level))
        self.regex = re.compile("/".join(parts) + r"\Z")
        self.filter = "/".join("+" if _PLACEHOLDER.fullmatch(level) else level
                               for level in config.pattern.split("/"))
        self.template = config.stream_id

    def route(self, topic: str) -> Route | None:
        found = self.regex.match(topic)
        if found is None:
            return None
        fields = dict(zip(self.names, found.groups()))
        if self.template is None:
            stream_id = "/".join(fields.values()) if fields else topic
        else:
            stream_id = self.template.format(**fields)
        return Route(stream_id, fields)


class TopicMapper:
    """Topic → :class:`Route`, first matching pattern wins; results are cached per topic."""

    def __init__(self, topics: Sequence[TopicConfig], share_group: str | None = None) -> None:
        self._patterns = [_Pattern(t) for t in topics]
        self._share_group = share_group
        self._cache: dict[str, Route | None] = {}

    def subscriptions(self) -> list[str]:
        """MQTT topic filters covering every pattern (shared when a group is configured)."""
        filters = list(dict.fromkeys(p.filter for p in self._patterns))
        if self._share_group:
            return [f"$share/{self._share_group}/{f}" for f in filters]
        return filters

    def match(self, topic: str) -> Route | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        route = next((r for r in (p.route(topic) for p in self._patterns) if r is not None), None)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = route
        return route
