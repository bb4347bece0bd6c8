"""The trainer's docstring examples run as tests too (pytest collects
doctests from ``edge_agent`` only, because importing every trainer module would need
TensorFlow; these modules do not)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["trainer.benchmarks", "trainer.calibrate", "trainer.crossval", "trainer.data",
           "trainer.metrics", "trainer.nab", "trainer.seasonality", "trainer.spread"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
