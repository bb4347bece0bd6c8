"""The trainer's and the benchmarks' docstring examples run as tests too (pytest collects
doctests from ``edge_agent`` only, because importing every trainer module would need
TensorFlow; these modules do not)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
BENCH_MODULES = ["nab_online_ar"]
MODULES = ["trainer.benchmarks", "trainer.calibrate", "trainer.crossval", "trainer.data",
           "trainer.metrics", "trainer.nab", "trainer.seasonality", "trainer.spread"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_benchmark_docstring_examples(name: str) -> None:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"bench/{name}.py has no docstring examples"
    assert result.failed == 0
