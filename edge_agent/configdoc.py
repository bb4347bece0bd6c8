"""Generate the configuration reference (``docs/configuration.md``) from the config schemas.

The reference is rendered from the pydantic models themselves — every key, its type, default
and description — so it cannot drift from what the programs accept; a test compares the file
with a fresh rendering. Regenerate with ``python -m edge_agent.configdoc > docs/configuration.md``.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """# Configuration reference

Generated from the configuration schemas by `python -m edge_agent.configdoc` (a test checks it
is current). Unknown keys are errors; every error names the file and the key path.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # a type with a validator: named by what it holds
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    if field.default_factory is not None:
        name = getattr(field.default_factory, "__name__", "")
        if name == "gethostname":
            return "host name"
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    return "**required**"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every key, sections depth-first."""
    out: list[tuple[str, str, str, str]] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section = _section_model(field.annotation)
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        if section is not None and typing.get_origin(field.annotation) is not list:
            nested.append((path, section))
            continue
        type_name = _type_name(field.annotation)
        if section is not None:
            nested.append((f"{path}[]", section))
        out.append((path, type_name, _default(field), description))
    for path, section in nested:
        doc = " ".join((section.__doc__ or "").strip().split("\n\n")[0].split())
        doc = doc.replace("``", "`").replace("|", "\\|")
        out.append((path, "section", "", doc))
        out.extend(rows(section, f"{path}."))
    return out


def render_model(title: str, model: type[BaseModel], intro: str) -> str:
    lines = [f"## {title}", "", intro, "", "| key | type | default | meaning |",
             "|---|---|---|---|"]
    for path, type_name, default, description in rows(model):
        key = f"**`{path}`**" if type_name == "section" else f"`{path}`"
        lines.append(f"| {key} | {type_name} | {default} | {description} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    from trainer.config import TrainerConfig

    from .config import AgentConfig

    return "\n".join([
        HEADER,
        render_model("Agent (`edge-agent run --config`)", AgentConfig,
                     "Example: [`configs/agent.yaml`](../configs/agent.yaml). Paths are relative "
                     "to the config file; `${VAR}` is expanded in file paths."),
        render_model("Trainer (`edge-trainer train --config`)", TrainerConfig,
                     "Example: [`configs/trainer.yaml`](../configs/trainer.yaml). Paths are "
                     "relative to the config file."),
    ])


if __name__ == "__main__":
    print(render(), end="")
