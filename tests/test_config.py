"""A broken config is one clear line naming file, line and key; a good one loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config, parse_config
from edge.wiring import build_rules

REPO = Path(__file__).resolve().parent.parent


def test_example_config_loads() -> None:
    cfg, base = load_config(REPO / "config" / "example.yaml")
    assert "lobby" in cfg.cameras
    assert base == (REPO / "config").resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gate:\n  width: 100\n  treshold: 3\n", "c.yaml:3: gate.treshold: unknown key 'treshold'"),
        (
            "cameras:\n  front:\n    source: x\n    lop: true\n",
            "c.yaml:4: cameras.front.lop: unknown key 'lop'",
        ),
        ("colour: blue\n", "c.yaml:1: colour: unknown key 'colour'"),
        ("gate: [1, 2\n", "c.yaml:2: not valid YAML"),
        ("- 1\n", "c.yaml:1: the config must be a mapping"),
        ("rules:\n  - name: a\n    label: person\n    zone: [[0, 0], [1, 1]]\n", "c.yaml:4: rules.0.zone"),
        ("cameras:\n  Front Door:\n    source: x\n", "c.yaml:2: cameras"),
        ("gate:\n  refresh_s: -1\n", "c.yaml:2: gate.refresh_s: Input should be greater than 0"),
    ],
)
def test_bad_config_names_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_rule_naming_an_unknown_camera_is_rejected() -> None:
    text = (
        "cameras:\n  door:\n    source: a.mp4\nrules:\n  - name: r\n    label: person\n    cameras: [yard]\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert (
        str(err.value)
        == "c.yaml:7: rules.0.cameras.0: rule 'r' names unknown camera 'yard' (known cameras: door)"
    )


def test_example_config_works_from_etc(tmp_path: Path) -> None:
    """Copied to /etc/reflex-edge as the systemd unit expects, the data goes where the unit may write
    and the manifest is the checkout's (nothing lands in the read-only /etc)."""
    etc = tmp_path / "etc" / "reflex-edge"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "config" / "example.yaml", etc / "config.yaml")
    cfg, base = load_config(etc / "config.yaml")
    assert base == etc.resolve()
    assert cfg.data_dir == "/var/lib/reflex-edge"
    assert Path(cfg.model.manifest).is_absolute() and Path(cfg.model.manifest).is_file()
    for path in (cfg.mqtt.password_file, cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file):
        assert path is None or path.startswith("/etc/reflex-edge/"), path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  a:\n    source: x\ngate:\n  width: 100\ncameras:\n  b:\n    source: y\n",
            "c.yaml:6: duplicate key 'cameras' (first at line 1)",
        ),
        (
            "cameras:\n  a:\n    source: x\n    source: y\n",
            "c.yaml:4: cameras.a: duplicate key 'source' (first at line 3)",
        ),
        (
            "rules:\n  - name: r\n    label: person\n    label: fire\n",
            "c.yaml:4: rules.0: duplicate key 'label' (first at line 3)",
        ),
    ],
)
def test_duplicate_key_is_an_error_naming_both_lines(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert str(err.value) == expected


def test_duplicate_key_is_listed_with_the_other_problems() -> None:
    text = "gate:\n  width: 100\ngate:\n  widht: 100\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert str(err.value).splitlines() == [
        "c.yaml: 2 problems:",
        "  c.yaml:3: duplicate key 'gate' (first at line 1)",
        "  c.yaml:4: gate.widht: unknown key 'widht'",
    ]


def test_every_problem_is_listed_with_its_line() -> None:
    text = "gate:\n  width: 10\n  treshold: 3\ncameras:\n  door:\n    lop: true\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert str(err.value).splitlines() == [
        "c.yaml: 4 problems:",
        "  c.yaml:2: gate.width: Input should be greater than or equal to 32",
        "  c.yaml:3: gate.treshold: unknown key 'treshold'",
        "  c.yaml:5: cameras.door.source: Field required",
        "  c.yaml:6: cameras.door.lop: unknown key 'lop'",
    ]
    assert len(err.value.problems) == 4


def test_rule_problems_name_the_offending_value_line() -> None:
    text = (
        "cameras:\n  door:\n    source: a.mp4\n"
        "rules:\n  - name: r\n    label: person\n    cameras: [door,\n      yard]\n"
        "  - name: r\n    label: person\n    cameras: [dor]\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert str(err.value).splitlines() == [
        "c.yaml: 3 problems:",
        "  c.yaml:8: rules.0.cameras.1: rule 'r' names unknown camera 'yard' (known cameras: door)",
        "  c.yaml:9: rules.1.name: two rules are named 'r' (the first is rules.0)",
        "  c.yaml:11: rules.1.cameras.0: rule 'r' names unknown camera 'dor' (did you mean 'door'?)",
    ]


def test_unknown_labels_are_listed_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("watch: [fire, persn]\nrules:\n  - name: r\n    label: unicorn\n", encoding="utf-8")
    cfg, base = load_config(path)
    with pytest.raises(ConfigError) as err:
        build_rules(cfg, base)
    lines = str(err.value).splitlines()
    assert lines[:2] == [
        f"{path}: 2 problems:",
        f"  {path}:1: watch.1: unknown label 'persn' (did you mean 'person'?)",
    ]
    assert lines[2].startswith(f"  {path}:4: rules.0.label: unknown label 'unicorn' (known labels: "), lines[
        2
    ]


def test_label_given_after_loading_has_no_stale_line(tmp_path: Path) -> None:
    """--watch replaces the file's list: its line would point at labels the user did not type; rules
    from a rules file keep that file's lines."""
    path = tmp_path / "c.yaml"
    path.write_text("watch: [fire]\n", encoding="utf-8")
    rules = parse_config("rules:\n  - name: r\n    label: persn\n", "rules.yaml").rules
    cfg = load_config(path)[0].model_copy(update={"watch": ["persn"], "rules": rules})
    with pytest.raises(ConfigError) as err:
        build_rules(cfg, tmp_path)
    assert str(err.value).splitlines()[1:] == [
        "  watch.0: unknown label 'persn' (did you mean 'person'?)",
        "  rules.yaml:3: rules.0.label: unknown label 'persn' (did you mean 'person'?)",
    ]


def test_paths_are_absolute_once_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    (conf / "models" / "mine.yaml").write_text("x: 1\n", encoding="utf-8")
    path = conf / "c.yaml"
    path.write_text(
        "data_dir: ../var\nmodel:\n  manifest: models/mine.yaml\n  path: m.onnx\n"
        "mqtt:\n  password_file: secret\n  ca_file: /abs/ca.pem\n"
        "  cert_file: tls/c.pem\n  key_file: tls/c.key\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(REPO)  # elsewhere than the config: nothing may depend on the working directory
    cfg, _ = load_config(path)
    c = conf.resolve()
    assert cfg.data_dir == str(c.parent / "var")
    assert cfg.model.manifest == str(c / "models" / "mine.yaml")
    assert cfg.model.path == str(c / "m.onnx")
    assert cfg.mqtt.password_file == str(c / "secret")
    assert cfg.mqtt.ca_file == "/abs/ca.pem"
    assert (cfg.mqtt.cert_file, cfg.mqtt.key_file) == (str(c / "tls" / "c.pem"), str(c / "tls" / "c.key"))
    # A relative manifest that is not beside the config is the checkout's.
    path.write_text("model:\n  manifest: models/yolox_nano.yaml\n", encoding="utf-8")
    assert load_config(path)[0].model.manifest == str(REPO / "models" / "yolox_nano.yaml")


def test_no_config_file_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, base = load_config(None)
    assert base == tmp_path
    assert cfg.data_dir == str(tmp_path.resolve() / "var")
    assert cfg.model.manifest == str(REPO / "models" / "yolox_nano.yaml")
