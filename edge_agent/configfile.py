"""Load a YAML config into a validated model, or fail naming the file and key path.

Both programs read their YAML through :func:`load_config`: ``yaml.safe_load``, then a pydantic
model whose sections reject unknown keys, so a typo (``treshold:``) stops start-up with the
file, the key path and what was expected instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; values are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def format_errors(error: ValidationError, where: str) -> str:
    """One line per problem: ``file: key.path: message``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the configuration schema; check its spelling)"
        lines.append(f"{where}: {path}: {message}")
    return "\n".join(lines)


def validate(data: Any, model: type[M], where: str) -> M:
    """Validate already-parsed data (a dict) against ``model``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level, "
                          f"found {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Read ``path`` as YAML and validate it against ``model``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return validate(data, model, str(path))
