"""Commands received over MQTT: camera switches and instructions (`ask`).

Everything arriving here is untrusted bytes. Each message is checked completely before anything
changes; a message that is malformed, oversized or names something unknown changes nothing and gets
one `error` answer on `…/answers` saying what was wrong.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from edge.bus.payloads import OFF, ON, PAYLOAD_VERSION, SWITCHES, topic
from edge.store import EventLog, StoreError

log = logging.getLogger("edge.bus.commands")

MAX_ID = 64
MAX_TEXT = 2000
ACK_TEXT = "Please wait a moment."


class CommandError(ValueError):
    """What is wrong with a command, in one line for the error answer."""


def answer_payload(ask_id: str | None, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"v": PAYLOAD_VERSION, "id": ask_id, "kind": kind, "text": text, **extra}


class Commands:
    """Turns command messages into switch changes and stored instructions, and answers them.

    `set_switch(camera, switch, on)` applies a switch (the appliance flips the red loop and
    publishes the new state); `answer(payload)` queues an answer for `…/answers`.
    """

    def __init__(
        self,
        prefix: str,
        device: str,
        cameras: Callable[[], set[str]],
        events: EventLog,
        set_switch: Callable[[str, str, bool], None],
        answer: Callable[[dict[str, Any]], None],
        max_bytes: int,
    ) -> None:
        self.root = topic(prefix, device) + "/"
        self.cameras = cameras
        self.events = events
        self.set_switch = set_switch
        self.answer = answer
        self.max_bytes = max_bytes

    def __call__(self, topic_: str, payload: bytes) -> None:
        ask_id: str | None = None
        try:
            if len(payload) > self.max_bytes:
                raise CommandError(f"payload of {len(payload)} bytes is over the {self.max_bytes}-byte limit")
            rest = topic_.removeprefix(self.root).split("/")
            if rest == ["ask"]:
                request = self._parse_ask(payload)
                ask_id = request["id"]
                self._ask(request)
            elif len(rest) == 3 and rest[2] == "set":
                self._switch(rest[0], rest[1], payload)
            else:
                raise CommandError(f"unknown command topic {topic_!r}")
        except CommandError as exc:
            ask_id = ask_id or _id_of(payload)
            log.warning("MQTT command on %s rejected: %s", topic_, exc)
            self.answer(answer_payload(ask_id, "error", f"{topic_}: {exc}"))

    def _switch(self, camera: str, switch: str, payload: bytes) -> None:
        if switch not in SWITCHES:
            raise CommandError(f"unknown switch {switch!r} (expected one of {', '.join(SWITCHES)})")
        if camera not in self.cameras():
            raise CommandError(f"unknown camera {camera!r}")
        try:
            value = payload.decode("utf-8").strip().upper()
        except UnicodeDecodeError:
            raise CommandError("payload is not UTF-8 text (expected ON or OFF)") from None
        if value not in (ON, OFF):
            raise CommandError(f"payload {value[:40]!r} is not ON or OFF")
        try:
            self.set_switch(camera, switch, value == ON)
        except StoreError as exc:
            raise CommandError(f"cannot store the switch: {exc}") from None

    def _parse_ask(self, payload: bytes) -> dict[str, Any]:
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CommandError('payload is not JSON (expected {"id", "text", "camera"?})') from None
        if not isinstance(data, dict):
            raise CommandError(f"payload is a JSON {type(data).__name__}, expected an object")
        unknown = set(data) - {"id", "text", "camera"}
        if unknown:
            raise CommandError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        ask_id = data.get("id")
        if ask_id is None:
            ask_id = f"ask-{uuid.uuid4().hex[:12]}"
        if not isinstance(ask_id, str) or not 0 < len(ask_id) <= MAX_ID:
            raise CommandError(f"'id' must be a string of 1-{MAX_ID} characters")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CommandError("'text' must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise CommandError(f"'text' is over {MAX_TEXT} characters")
        camera = data.get("camera")
        if camera is not None and (not isinstance(camera, str) or camera not in self.cameras()):
            raise CommandError(f"unknown camera {camera!r}")
        return {"id": ask_id, "text": text.strip(), "camera": camera}

    def _ask(self, request: dict[str, Any]) -> None:
        try:
            self.events.add_instruction(request["id"], request["text"], request["camera"], "mqtt")
        except StoreError as exc:
            raise CommandError(f"cannot store the instruction: {exc}") from None
        self.answer(answer_payload(request["id"], "ack", ACK_TEXT))


def _id_of(payload: bytes) -> str | None:
    """The sender's id from a rejected ask, when one can be read, so the error reaches its asker."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    ask_id = data.get("id") if isinstance(data, dict) else None
    return ask_id if isinstance(ask_id, str) and 0 < len(ask_id) <= MAX_ID else None
