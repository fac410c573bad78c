"""Configuration: pydantic models (one YAML file) and the loader that reports file:line errors.

A loaded config has absolute paths and remembers its lines: `cfg.where(("rules", 0, "label"))` is
'FILE:LINE' (None for settings not from a file) and `cfg.problem(loc, msg)` the one-line report,
so checks made after loading name the line too; `ConfigError.listing(problems)` reports several.
"""

from edge.config.loader import ConfigError, load_config, parse_config
from edge.config.models import (
    CameraConfig,
    EdgeConfig,
    EventsConfig,
    FireConfig,
    GateConfig,
    Loc,
    ModelConfig,
    RetentionConfig,
    RuleConfig,
    did_you_mean,
    resolve_manifest,
    resolve_path,
)

__all__ = [
    "CameraConfig",
    "ConfigError",
    "EdgeConfig",
    "EventsConfig",
    "FireConfig",
    "GateConfig",
    "Loc",
    "ModelConfig",
    "RetentionConfig",
    "RuleConfig",
    "did_you_mean",
    "load_config",
    "parse_config",
    "resolve_manifest",
    "resolve_path",
]
