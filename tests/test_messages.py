"""Payload parsing: any bytes at all give a reading or a reject reason, never an exception."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import PayloadConfig
from edge_agent.messages import REASONS, PayloadParser, Reading

FEATURES = ["a", "b", "c"]
PARSER = PayloadParser(FEATURES, PayloadConfig(max_bytes=512))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FEATURES + ["ts", "x"]), children, max_size=5),
    max_leaves=12)


def check(payload: bytes) -> None:
    result = PARSER.parse(payload)
    if isinstance(result, str):
        assert result in REASONS
    else:
        assert isinstance(result, Reading)
        assert len(result.values) == 3 and all(type(v) is float for v in result.values)
        assert all(math.isfinite(v) for v in result.values)
        assert result.ts is None or math.isfinite(result.ts)


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_any_bytes_give_a_reading_or_a_reason(payload: bytes) -> None:
    check(payload)


@settings(max_examples=400)
@given(json_values)
def test_any_json_gives_a_reading_or_a_reason(value: object) -> None:
    check(json.dumps(value).encode())


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3,
                max_size=3))
def test_valid_readings_keep_their_values(values: list[float]) -> None:
    as_object = PARSER.parse(json.dumps(dict(zip(FEATURES, values))).encode())
    as_array = PARSER.parse(json.dumps(values).encode())
    assert isinstance(as_object, Reading) and isinstance(as_array, Reading)
    assert as_object.values == values == as_array.values


def test_each_reject_reason() -> None:
    cases = {
        b"x" * 513: "oversize",
        b"\xc3\x28": "not_utf8",
        b"{'a': 1}": "invalid_json",
        b"42": "wrong_type",
        b'{"a": 1, "b": 2}': "missing_field",
        b'{"a": 1, "b": 2, "c": 3, "d": 4}': "extra_field",
        b'{"a": 1, "b": true, "c": 3}': "non_numeric",
        b'{"a": 1, "b": 1e999, "c": 3}': "not_finite",
        b'{"a": 1, "b": -Infinity, "c": 3}': "not_finite",
        b'[Infinity, -Infinity, 1]': "not_finite",  # fsum raises ValueError on -inf + inf
        b'[1, 2]': "wrong_length",
        b'{"a": 1, "b": 2, "c": 3, "ts": "yesterday"}': "bad_timestamp",
        b'{"a": 1, "b": 2, "c": 3, "ts": [1]}': "bad_timestamp",
    }
    for payload, reason in cases.items():
        assert PARSER.parse(payload) == reason, payload[:40]
    deep = PayloadParser(FEATURES, PayloadConfig(max_bytes=300_000))
    assert deep.parse(b"[" * 100_000 + b"]" * 100_000) == "invalid_json"  # RecursionError
    huge_int = ('{"a": 1, "b": 2, "c": ' + "9" * 400 + "}").encode()
    assert PARSER.parse(huge_int) == "not_finite"


def test_renames_ignored_fields_and_timestamps() -> None:
    parser = PayloadParser(FEATURES, PayloadConfig(fields={"A": "a"}, ignore_fields=["unit"],
                                                   timestamp_field="time"))
    reading = parser.parse(b'{"A": 1, "b": 2, "c": 3, "unit": "SI", '
                           b'"time": "2026-01-01T00:00:01Z"}')
    assert isinstance(reading, Reading)
    assert reading.values == [1.0, 2.0, 3.0]
    assert reading.ts == 1767225601.0
    assert parser.parse(b'{"a": 1, "b": 2, "c": 3}') == "missing_field"
    ms = parser.parse(b'{"A": 1, "b": 2, "c": 3, "time": 1767225601500}')
    assert isinstance(ms, Reading) and ms.ts == 1767225601.5
