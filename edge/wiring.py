"""Turns a validated config into the red loop's parts; shared by `edge scan`, `edge run` and the bench."""

from __future__ import annotations

from pathlib import Path

from edge.config import ConfigError, EdgeConfig, parse_config
from edge.reflex import ObjectDetector, build_detector, load_manifest
from edge.rules import AREA_LABELS, Rule, default_rules


def rules_from_file(path: str) -> list:
    """A rules file is a config fragment holding `rules:`; it replaces the config's rules."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules file: {exc.strerror or exc}") from None
    return parse_config(text, path).rules


def known_labels(cfg: EdgeConfig, base_dir: Path) -> set[str]:
    manifest = _manifest_path(cfg, base_dir)
    return set(load_manifest(manifest).labels) | AREA_LABELS


def build_rules(cfg: EdgeConfig, base_dir: Path) -> list[Rule]:
    """The config's rules plus a default rule for each watched label no rule covers."""
    known = known_labels(cfg, base_dir)
    for label in cfg.watch:
        if label not in known:
            raise ConfigError(f"unknown label {label!r} to watch; known labels: {', '.join(sorted(known))}")
    for rule in cfg.rules:
        if rule.label not in known:
            raise ConfigError(f"rule {rule.name!r} watches unknown label {rule.label!r}")
    covered = {r.label for r in cfg.rules}
    configs = list(cfg.rules) + default_rules([w for w in cfg.watch if w not in covered], cfg.fire)
    if not configs:
        raise ConfigError("nothing to watch: give --watch LABELS or rules in the config")
    return [Rule(c) for c in configs]


def needs_objects(rules: list[Rule]) -> bool:
    return any(r.label not in AREA_LABELS for r in rules)


def load_detector(cfg: EdgeConfig, base_dir: Path, rules: list[Rule]) -> ObjectDetector | None:
    if not needs_objects(rules):
        return None
    return build_detector(cfg.model, base_dir)


def _manifest_path(cfg: EdgeConfig, base_dir: Path) -> Path:
    path = Path(cfg.model.manifest)
    if path.is_absolute():
        return path
    here = base_dir / path
    return here if here.exists() else Path(__file__).resolve().parent.parent / path
