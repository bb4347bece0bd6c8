"""Static check: pyflakes finds no undefined names, unused imports or similar slips.

A name used only on a path no test reaches (a report line in a rarely run benchmark branch)
would otherwise surface first on a user's machine; pyflakes reads every line without running
it. Covers the packages, the tests, the benchmarks and the Python scripts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pyflakes_api = pytest.importorskip("pyflakes.api", reason="pyflakes is in the test extra")
from pyflakes.reporter import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["edge_agent", "trainer", "tests", "bench", "scripts"]


def python_files() -> list[Path]:
    """Every .py file under the checked folders, plus scripts whose first line names Python."""
    found: list[Path] = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file():
                continue
            if path.suffix == ".py":
                found.append(path)
            elif path.suffix == "" and path.read_bytes()[:64].startswith(b"#!") \
                    and b"python" in path.read_bytes().split(b"\n", 1)[0]:
                found.append(path)
    return found


class Collect(Reporter):
    """A pyflakes reporter that keeps messages instead of printing them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def unexpectedError(self, filename, msg):  # noqa: N802 (pyflakes' interface)
        self.messages.append(f"{filename}: {msg}")

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802
        self.messages.append(f"{filename}:{lineno}: syntax error: {msg}")

    def flake(self, message):
        self.messages.append(str(message))


def test_the_checked_files_include_the_packages_and_the_scripts():
    names = {p.relative_to(ROOT).as_posix() for p in python_files()}
    assert "edge_agent/scoring.py" in names and "trainer/nab.py" in names
    assert "scripts/pi-e2e" in names  # a Python script without the .py suffix


def test_pyflakes_finds_nothing():
    reporter = Collect()
    for path in python_files():
        pyflakes_api.check(path.read_text(), str(path.relative_to(ROOT)), reporter)
    assert reporter.messages == []
