"""Commands received over MQTT: camera switches, the mode and instructions (`ask`), handed to the
control surface.

Everything arriving here is untrusted bytes. Each message is checked completely before anything
changes; a message that is malformed, oversized or names something unknown changes nothing and gets
one `error` answer on `…/answers` saying what was wrong. Every ask gets an answer: when the command
queue overflows, a cheap `error: busy` instead of silence.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from edge.bus.mqtt import Bus, Received
from edge.control import Control, ControlError
from edge.outbox import OFF, ON, Topics

log = logging.getLogger("edge.bus.commands")

MAX_ID = 64
MAX_TEXT = 2000


class CommandError(ValueError):
    """What is wrong with a command, in one line for the error answer."""


class Commands:
    """Parses command messages and calls the control surface."""

    def __init__(self, topics: Topics, control: Control, max_bytes: int) -> None:
        self.topics = topics
        self.control = control
        self.max_bytes = max_bytes

    def subscribe(self, bus: Bus) -> None:
        bus.subscribe(self.topics.ask, self)
        bus.subscribe(self.topics.switch_commands, self)
        bus.subscribe(self.topics.mode_set, self)

    def __call__(self, message: Received) -> None:
        topic_, payload = message.topic, message.payload
        ask_id: str | None = None
        try:
            if len(payload) > self.max_bytes:
                raise CommandError(f"payload of {len(payload)} bytes is over the {self.max_bytes}-byte limit")
            rest = self.topics.relative(topic_) or []
            if message.busy:
                raise CommandError("busy: too many commands at once; nothing was done, send it again")
            if rest == ["ask"]:
                request = self._parse_ask(payload)
                ask_id = request["id"]
                self.control.ask(ask_id, request["text"], request["camera"], "mqtt")
            elif rest == ["mode", "set"]:
                if message.retained:
                    raise CommandError(
                        "a retained mode command is not taken (it would switch again on every reconnect); "
                        "publish it without retain"
                    )
                self.control.set_mode(_mode_name(payload), by="mqtt")
            elif len(rest) == 3 and rest[2] == "set":
                self.control.set_switch(rest[0], rest[1], _on_off(payload), by="mqtt")
            else:
                raise CommandError(f"unknown command topic {topic_!r}")
        except (CommandError, ControlError) as exc:
            ask_id = ask_id or _id_of(payload, self.max_bytes)
            log.warning("MQTT command on %s rejected: %s", topic_, exc)
            self.control.answer(ask_id, "error", f"{topic_}: {exc}")

    def _parse_ask(self, payload: bytes) -> dict[str, Any]:
        data = _json(payload)
        if data is None:
            raise CommandError('payload is not JSON (expected {"id", "text", "camera"?})')
        if not isinstance(data, dict):
            raise CommandError(f"payload is a JSON {type(data).__name__}, expected an object")
        unknown = set(data) - {"id", "text", "camera"}
        if unknown:
            raise CommandError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}")
        ask_id = data.get("id")
        if ask_id is not None and (not isinstance(ask_id, str) or not 0 < len(ask_id) <= MAX_ID):
            raise CommandError(f"'id' must be a string of 1-{MAX_ID} characters")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CommandError("'text' must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise CommandError(f"'text' is over {MAX_TEXT} characters")
        camera = data.get("camera")
        if camera is not None and not isinstance(camera, str):
            raise CommandError("'camera' must be a camera name")
        return {"id": ask_id, "text": text.strip(), "camera": camera}


def _on_off(payload: bytes) -> bool:
    value = _text(payload, "ON or OFF").upper()
    if value not in (ON, OFF):
        raise CommandError(f"payload {value[:40]!r} is not ON or OFF")
    return value == ON


def _mode_name(payload: bytes) -> str:
    value = _text(payload, "a mode name")
    if not value:
        raise CommandError("payload is empty (expected a mode name)")
    return value[:64]


def _text(payload: bytes, expected: str) -> str:
    """A plain-text payload (a switch's ON/OFF, a mode's name), stripped; `expected` says what it should
    be in the error when it is not UTF-8."""
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError(f"payload is not UTF-8 text (expected {expected})") from None


def _json(payload: bytes) -> Any:
    """The decoded JSON, or None when it is not JSON. Deeply nested input ('[' * 4000) exceeds the
    parser's recursion limit: that is malformed input too, not a crash."""
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _id_of(payload: bytes, max_bytes: int) -> str | None:
    """The sender's id from a rejected ask, when one can be read, so the error reaches its asker."""
    data = _json(payload) if len(payload) <= max_bytes else None
    ask_id = data.get("id") if isinstance(data, dict) else None
    return ask_id if isinstance(ask_id, str) and 0 < len(ask_id) <= MAX_ID else None
