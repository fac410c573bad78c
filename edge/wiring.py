"""Turns a validated config into the red loop's parts; shared by `edge scan`, `edge run` and the bench."""

from __future__ import annotations

from pathlib import Path

from edge.config import ConfigError, EdgeConfig, Loc, did_you_mean, parse_config, resolve_manifest
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
    """The model manifest's labels and the area labels (fire, smoke). base_dir only matters for a config
    built in code with a relative manifest; a loaded config's is absolute."""
    manifest = resolve_manifest(cfg.model.manifest, base_dir)
    return set(load_manifest(manifest).labels) | AREA_LABELS


def build_rules(cfg: EdgeConfig, base_dir: Path, *, allow_empty: bool = False) -> list[Rule]:
    """The config's rules plus a default rule for each watched label no rule covers.

    Labels are known only from the model manifest, so they are checked here rather than when loading;
    each unknown one is still reported at its file and line, all of them together.
    """
    known = known_labels(cfg, base_dir)
    labels: list[tuple[Loc, str]] = [(("watch", i), label) for i, label in enumerate(cfg.watch)]
    labels += [(("rules", i, "label"), rule.label) for i, rule in enumerate(cfg.rules)]
    unknown = [(loc, label) for loc, label in labels if label not in known]
    if unknown:
        problems = [
            cfg.problem(loc, f"unknown label {label!r} ({did_you_mean(label, known, 'labels')})")
            for loc, label in unknown
        ]
        files = {cfg.file_of(loc) for loc, _ in unknown}
        raise ConfigError.listing(problems, files.pop() if len(files) == 1 else None)
    covered = {r.label for r in cfg.rules}
    configs = list(cfg.rules) + default_rules([w for w in cfg.watch if w not in covered], cfg.fire)
    if not configs and not allow_empty:  # `edge run` may start empty and wait for instructions
        raise ConfigError("nothing to watch: give --watch LABELS or rules in the config")
    return [Rule(c) for c in configs]


def needs_objects(rules: list[Rule]) -> bool:
    return any(r.label not in AREA_LABELS for r in rules)


def load_detector(cfg: EdgeConfig, base_dir: Path, rules: list[Rule]) -> ObjectDetector | None:
    if not needs_objects(rules):
        return None
    return build_detector(cfg.model, base_dir)
