"""Load and validate the YAML config, turning every problem into one line that names file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge.config.models import EdgeConfig

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A config file or flag the appliance cannot run with; str() is a one-line message for users."""


def _line_map(node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


def _closest_line(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def format_validation_error(err: ValidationError, source: str, lines: dict[Loc, int]) -> str:
    first = err.errors()[0]
    loc: Loc = tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    line = _closest_line(loc, lines)
    where = f"{source}:{line}" if line else source
    if first["type"] == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}'" if loc else "unknown key"
    else:
        msg = first["msg"]
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {dotted}: {msg}{tail}"


def parse_config(text: str, source: str = "<config>") -> EdgeConfig:
    try:
        node = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping of sections, not {type(data).__name__}")
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, lines)) from None


def load_config(path: str | Path | None) -> tuple[EdgeConfig, Path]:
    """Return the config and the folder relative paths in it are resolved against."""
    if path is None:
        return EdgeConfig(), Path.cwd()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc}") from None
    return parse_config(text, str(p)), p.resolve().parent
