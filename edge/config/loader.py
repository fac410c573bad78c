"""Load and validate the YAML config, turning every problem into a line that names file, line and key.

Loading also makes every path setting absolute (against the config file's folder), once: later code
never has to know where the config was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge.config.models import EdgeConfig, Loc, closest_line, dotted, format_problem, set_origin

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(Exception):
    """A config file or flag the appliance cannot run with.

    str() is one line per problem: a single problem is the line itself (`FILE:LINE: key: message`);
    several are a heading (`FILE: 3 problems:`) and each problem indented on its own line, so that one
    run shows everything to fix. `problems` holds the problem lines.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]

    @classmethod
    def listing(cls, problems: Sequence[str], source: str | None = None) -> ConfigError:
        """One error for all of problems (at least one); source names the file in the heading."""
        if len(problems) == 1:
            return cls(problems[0])
        head = f"{source}: {len(problems)} problems:" if source else f"{len(problems)} problems:"
        return cls("\n".join([head, *(f"  {p}" for p in problems)]), problems)


def _line_map(node: yaml.Node, path: Loc, out: dict[Loc, int], seen: frozenset[int] = frozenset()) -> None:
    if id(node) in seen:
        return  # a recursive alias (&a [*a])
    seen = seen | {id(node)}
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _line_map(value_node, (*path, key), out, seen)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out, seen)


def _duplicate_keys(
    node: yaml.Node, path: Loc, source: str, out: list[tuple[int, str]], seen: frozenset[int] = frozenset()
) -> None:
    """PyYAML lets a repeated key silently replace the first (a second `cameras:` block drops the
    first one's cameras); list each repeat, with both lines."""
    if id(node) in seen:
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, key_node.value)
                if ident in first:
                    where = f"{source}:{line}: {dotted(path)}" if path else f"{source}:{line}"
                    out.append(
                        (line, f"{where}: duplicate key {key_node.value!r} (first at line {first[ident]})")
                    )
                else:
                    first[ident] = line
            _duplicate_keys(value_node, (*path, key_node.value), source, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, (*path, i), source, out, seen)


def _read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Parse once into nodes (for lines and duplicate keys) and build the data from those nodes."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return node, data


def validation_problems(err: ValidationError, source: str, lines: dict[Loc, int]) -> list[str]:
    """Each pydantic error as `FILE:LINE: dotted.key: message`, in the order of the file's lines."""
    return [p for _, p in sorted(_numbered_problems(err, source, lines), key=lambda lp: lp[0])]


def _numbered_problems(err: ValidationError, source: str, lines: dict[Loc, int]) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    for e in err.errors():
        loc: Loc = tuple(e["loc"])
        line = closest_line(loc, lines)
        if e["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'" if loc else "unknown key"
        else:
            msg = e["msg"]
        problems.append((line or 0, format_problem(f"{source}:{line}" if line else source, loc, msg)))
    return problems


def format_validation_error(err: ValidationError, source: str, lines: dict[Loc, int]) -> str:
    """Every problem in err: one line when there is one, else a heading and one line per problem."""
    return str(ConfigError.listing(validation_problems(err, source, lines), source))


def parse_config(text: str, source: str = "<config>", base_dir: str | Path | None = None) -> EdgeConfig:
    """Validate a config's text; relative paths in it become absolute under base_dir (default: the
    current directory). The config remembers its lines: cfg.where(loc) / cfg.problem(loc, msg)."""
    node, data = _read_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping of sections, not {type(data).__name__}")
    lines: dict[Loc, int] = {}
    problems: list[tuple[int, str]] = []
    if node is not None:
        _line_map(node, (), lines)
        _duplicate_keys(node, (), source, problems)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    cfg: EdgeConfig | None = None
    try:
        cfg = EdgeConfig.model_validate(data, context={"base_dir": base.resolve()})
    except ValidationError as exc:
        problems += _numbered_problems(exc, source, lines)
    if problems or cfg is None:
        raise ConfigError.listing([p for _, p in sorted(problems, key=lambda lp: lp[0])], source)
    set_origin(cfg, source, lines)
    return cfg


def load_config(path: str | Path | None) -> tuple[EdgeConfig, Path]:
    """Return the config, its paths made absolute, and the folder they were resolved against (the config
    file's, or the current directory without a file)."""
    if path is None:
        base = Path.cwd()
        return EdgeConfig.model_validate({}, context={"base_dir": base}), base
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc}") from None
    base = p.resolve().parent
    return parse_config(text, str(p), base), base
