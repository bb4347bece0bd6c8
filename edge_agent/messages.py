"""Parse a reading's payload, or reject it with a reason; never raise.

This runs in paho's network thread, where an exception would kill the connection, so every
input — any bytes at all — yields either a :class:`Reading` or a reject reason (a short string
from :data:`REASONS`, used as a counter label). A rejected payload touches no stream's state.

Accepted payloads, both UTF-8 JSON:

* an object with one number per model feature, by name (``fields`` renames payload names to
  feature names; ``ignore_fields`` lists extra fields to accept), and optionally a timestamp
  field holding ISO 8601 text or epoch seconds/milliseconds;
* an array of numbers in the model's feature order.

>>> p = PayloadParser(["a", "b"], PayloadConfig())
>>> p.parse(b'{"a": 1, "b": 2.5, "ts": 10}')
Reading(values=[1.0, 2.5], ts=10.0)
>>> p.parse(b'[1, 2]').values
[1.0, 2.0]
>>> [p.parse(x) for x in (b'\\xff', b'{', b'{"a": 1}', b'[1, "x"]', b'[1, NaN]', b'[1]')]
['not_utf8', 'invalid_json', 'missing_field', 'non_numeric', 'not_finite', 'wrong_length']
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple, Sequence


from .config import PayloadConfig
from .csvdata import epoch_seconds, parse_timestamp

#: Every reject reason, for counters and documentation.
REASONS = ("oversize", "not_utf8", "invalid_json", "wrong_type", "missing_field", "extra_field",
           "non_numeric", "not_finite", "wrong_length", "bad_timestamp")


class Reading(NamedTuple):
    values: list[float]  # one finite float per feature, in the model's order
    ts: float | None


def _number(value: Any) -> float | str:
    """A finite float, or the reject reason for ``value``."""
    if type(value) is float:
        return value if math.isfinite(value) else "not_finite"
    if type(value) is int:
        try:
            number = float(value)
        except OverflowError:
            return "not_finite"
        return number if math.isfinite(number) else "not_finite"
    return "non_numeric"  # str, bool, None, list, dict


class PayloadParser:
    """Turns payload bytes into readings of one model's features."""

    def __init__(self, features: Sequence[str], config: PayloadConfig) -> None:
        self.features = list(features)
        self.max_bytes = config.max_bytes
        self.ts_field = config.timestamp_field
        rename = {feature: name for name, feature in config.fields.items()}
        self.keys = [rename.get(f, f) for f in self.features]
        self.allowed = set(self.keys) | set(config.ignore_fields)
        if self.ts_field:
            self.allowed.add(self.ts_field)

    def parse(self, payload: bytes) -> Reading | str:
        if len(payload) > self.max_bytes:
            return "oversize"
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return "invalid_json"
        if type(data) is dict:
            return self._from_object(data)
        if type(data) is list:
            return self._from_array(data)
        return "wrong_type"

    def _from_values(self, raw: list[Any], ts: float | None) -> Reading | str:
        for value in raw:
            kind = type(value)
            if kind is not float and kind is not int:
                return "non_numeric"  # str, bool, None, list, dict
        try:
            total = math.fsum(raw)
        except (OverflowError, ValueError):  # a huge int, an overflowing sum, -inf + inf
            total = None
        if total is None or not math.isfinite(total):
            for value in raw:
                if _number(value) == "not_finite":
                    return "not_finite"
        return Reading(list(map(float, raw)), ts)

    def _from_array(self, data: list[Any]) -> Reading | str:
        if len(data) != len(self.keys):
            return "wrong_length"
        return self._from_values(data, None)

    def _from_object(self, data: dict[str, Any]) -> Reading | str:
        try:
            raw = [data[key] for key in self.keys]
        except KeyError:
            return "missing_field"
        if len(data) > len(self.keys) and not self.allowed.issuperset(data):
            return "extra_field"
        ts = None
        if self.ts_field is not None and self.ts_field in data:
            stamp = data[self.ts_field]
            kind = type(stamp)
            try:
                if kind is str:
                    ts = parse_timestamp(stamp)
                elif kind is int or kind is float:
                    ts = epoch_seconds(stamp)
                else:
                    return "bad_timestamp"
            except (ValueError, OverflowError, OSError):
                return "bad_timestamp"
        return self._from_values(raw, ts)
