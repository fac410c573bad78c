"""A broken config is one clear line naming file, line and key; a good one loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config, parse_config

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
    with pytest.raises(ConfigError, match="unknown camera 'yard'"):
        parse_config(text, "c.yaml")
