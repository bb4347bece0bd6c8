"""Error types that name what was wrong and where.

Every error a user can cause (bad data, bad config, bad bundle) carries its location so the
message alone is enough to fix it; the command-line entry points print ``str(error)`` and exit
non-zero instead of showing a traceback.
"""

from __future__ import annotations

from typing import Callable


class EdgeError(Exception):
    """Base class of the errors users can cause and fix."""


class DataError(EdgeError):
    """A problem in an input data file, located by file, row and column.

    >>> str(DataError("non-numeric value 'abc'", file="a.csv", row=7, column="temp"))
    "a.csv, row 7, column 'temp': non-numeric value 'abc'"
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.row = row
        self.column = column
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class ConfigError(EdgeError):
    """A configuration file that cannot be used; the message names file and key path."""


class BundleError(EdgeError):
    """A model bundle that is missing, truncated, tampered with or incompatible."""


def run_cli(prog: str, func: "Callable[[], int]", error_exit: int) -> int:
    """Run a command-line action: user-fixable errors print one clear line (no traceback)."""
    import sys

    try:
        return int(func())
    except EdgeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return error_exit
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
