"""Configuration: pydantic models (one YAML file) and the loader that reports file:line errors."""

from edge.config.loader import ConfigError, load_config, parse_config
from edge.config.models import (
    CameraConfig,
    EdgeConfig,
    EventsConfig,
    FireConfig,
    GateConfig,
    ModelConfig,
    RetentionConfig,
    RuleConfig,
)

__all__ = [
    "CameraConfig",
    "ConfigError",
    "EdgeConfig",
    "EventsConfig",
    "FireConfig",
    "GateConfig",
    "ModelConfig",
    "RetentionConfig",
    "RuleConfig",
    "load_config",
    "parse_config",
]
