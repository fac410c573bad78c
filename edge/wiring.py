"""Turns a validated config into the red loop's parts; shared by `edge scan`, `edge run` and the bench."""

from __future__ import annotations

from pathlib import Path

from edge.config import ConfigError, EdgeConfig, Loc, did_you_mean, parse_config, resolve_manifest
from edge.reflex import ModelManifest, ObjectDetector, build_detector, load_manifest
from edge.rules import AREA_LABELS, Rule, default_rules
from edge.rules.tracker import PIXEL_DETECTORS


def rules_from_file(path: str) -> list:
    """A rules file is a config fragment holding `rules:`; it replaces the config's rules."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules file: {exc.strerror or exc}") from None
    return parse_config(text, path).rules


def extra_manifests(cfg: EdgeConfig, base_dir: Path) -> list[ModelManifest]:
    """The manifests of `extra_models`, in order. Their names become `Detection.detector`, which tells a
    model's fire from the pixel detector's, so a name a built-in detector uses, or two models of one
    name, is a config error (one line, at the entry)."""
    manifests: list[ModelManifest] = []
    for i, extra in enumerate(cfg.extra_models):
        manifest = load_manifest(resolve_manifest(extra.manifest, base_dir))
        taken = PIXEL_DETECTORS | {"objects"} | {m.name for m in manifests}
        if manifest.name in taken:
            msg = f"manifest name {manifest.name!r} is taken (a built-in detector or another extra model)"
            raise ConfigError(cfg.problem(("extra_models", i, "manifest"), f"{msg}; rename it there"))
        manifests.append(manifest)
    return manifests


def known_labels(cfg: EdgeConfig, base_dir: Path) -> set[str]:
    """The model manifest's labels, the extra models' and the area labels (fire, smoke). base_dir only
    matters for a config built in code with a relative manifest; a loaded config's is absolute."""
    manifest = resolve_manifest(cfg.model.manifest, base_dir)
    extra = {label for m in extra_manifests(cfg, base_dir) for label in m.labels}
    return set(load_manifest(manifest).labels) | extra | AREA_LABELS


def build_rules(cfg: EdgeConfig, base_dir: Path, *, allow_empty: bool = False) -> list[Rule]:
    """The config's rules plus a default rule for each watched label no rule covers.

    Labels are known only from the model manifest, so they are checked here rather than when loading;
    each unknown one is still reported at its file and line, all of them together.
    """
    known = known_labels(cfg, base_dir)
    labels: list[tuple[Loc, str]] = [(("watch", i), label) for i, label in enumerate(cfg.watch)]
    labels += [(("rules", i, "label"), rule.label) for i, rule in enumerate(cfg.rules)]
    labels += [(("cameras", cam, "lines", name, "labels", i), label)
               for cam, cam_cfg in cfg.cameras.items() for name, line in cam_cfg.lines.items()
               for i, label in enumerate(line.labels)]  # fmt: skip
    unknown = [(loc, label) for loc, label in labels if label not in known]
    problems = [
        cfg.problem(loc, f"unknown label {label!r} ({did_you_mean(label, known, 'labels')})")
        for loc, label in unknown
    ]
    bad_source = _source_problems(cfg, base_dir)
    if problems or bad_source:
        problems += [cfg.problem(loc, msg) for loc, msg in bad_source]
        files = {cfg.file_of(loc) for loc, _ in unknown + bad_source}
        raise ConfigError.listing(problems, files.pop() if len(files) == 1 else None)
    covered = {r.label for r in cfg.rules}
    configs = list(cfg.rules) + default_rules([w for w in cfg.watch if w not in covered], cfg.fire, cfg.smoke)
    if not configs and not allow_empty:  # `edge run` may start empty and wait for instructions
        raise ConfigError("nothing to watch: give --watch LABELS or rules in the config")
    return [Rule(c) for c in configs]


def _source_problems(cfg: EdgeConfig, base_dir: Path) -> list[tuple[Loc, str]]:
    """Rules whose `source` cannot work: set on a label other than fire/smoke, or `model` for a label
    no extra model has."""
    from_models = {label for m in extra_manifests(cfg, base_dir) for label in m.labels}
    out: list[tuple[Loc, str]] = []
    for i, rule in enumerate(cfg.rules):
        loc: Loc = ("rules", i, "source")
        if rule.source != "any" and rule.label not in AREA_LABELS:
            out.append((loc, f"rule {rule.name!r}: source {rule.source!r} is for fire and smoke only"))
        elif rule.source == "model" and rule.label not in from_models:
            msg = f"rule {rule.name!r} takes {rule.label!r} from a model (source: model), but no"
            out.append((loc, f"{msg} extra_models manifest has the label {rule.label!r}"))
    return out


def needs_objects(rules: list[Rule]) -> bool:
    return any(r.label not in AREA_LABELS for r in rules)


def load_models(cfg: EdgeConfig, base_dir: Path, rules: list[Rule] | None = None) -> list[ObjectDetector]:
    """The extra models (config `extra_models`), each named after its manifest. With rules, only those
    that know a label one of the rules may take from a model (source any or model); None: all of them
    (`edge run`, where a runtime rule may want one later)."""
    manifests = extra_manifests(cfg, base_dir)
    wanted = None if rules is None else {r.label for r in rules if r.cfg.source != "pixel"}
    return [
        build_detector(extra, base_dir, extra=True)
        for extra, manifest in zip(cfg.extra_models, manifests, strict=True)
        if wanted is None or wanted & set(manifest.labels)
    ]


def load_detector(cfg: EdgeConfig, base_dir: Path, rules: list[Rule]) -> ObjectDetector | None:
    if not needs_objects(rules):
        return None
    return build_detector(cfg.model, base_dir)
