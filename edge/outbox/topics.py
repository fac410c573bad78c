"""The device's MQTT topics (DESIGN.md's MQTT table), all under `{prefix}/{device}/`.

availability                      online/offline, retained, also the Last Will
events, alerts                    JSON, QoS 1, from the outbox
stats                             JSON, QoS 0, retained
ask, answers                      instructions in, answers out
blue/request, blue/result         blue-loop jobs out, results in
{camera}/{label}                  current count, retained
{camera}/snapshot                 JPEG of the latest alert, retained
{camera}/status                   camera online/offline, retained
{camera}/active/{rule}            ON while an event of that rule is open, retained
{camera}/{detect|alerts}/set      switch commands in (ON/OFF)
{camera}/{detect|alerts}/state    switch states, retained
{camera}/line/{line}/{label}      JSON {v, in, out, since}: crossings since midnight, retained
{camera}/zone/{zone}/{label}      objects inside the zone now, retained
mode/set                          mode command in (the mode's name, plain text)
mode/state                        the mode on now, retained
"""

from __future__ import annotations

from dataclasses import dataclass

BLUE_GROUP = "blueloop"
"""The shared-subscription group every blue-loop worker joins."""


def blue_request_filter(prefix: str, group: str = BLUE_GROUP) -> str:
    """What a blue-loop worker subscribes to: every device's job requests, shared in `group`."""
    return f"$share/{group}/{prefix}/+/blue/request"


def device_of_request(prefix: str, topic: str) -> str | None:
    """The device id in `{prefix}/{device}/blue/request`, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == prefix and parts[2:] == ["blue", "request"] and parts[1]:
        return parts[1]
    return None


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    device: str

    def __call__(self, *parts: str) -> str:
        return "/".join((self.prefix, self.device, *parts))

    @property
    def root(self) -> str:
        return self()

    @property
    def availability(self) -> str:
        return self("availability")

    @property
    def events(self) -> str:
        return self("events")

    @property
    def alerts(self) -> str:
        return self("alerts")

    @property
    def stats(self) -> str:
        return self("stats")

    @property
    def ask(self) -> str:
        return self("ask")

    @property
    def answers(self) -> str:
        return self("answers")

    @property
    def blue_request(self) -> str:
        return self("blue", "request")

    @property
    def blue_result(self) -> str:
        return self("blue", "result")

    @property
    def switch_commands(self) -> str:
        """Filter matching every camera's `{switch}/set`."""
        return self("+", "+", "set")

    def count(self, camera: str, label: str) -> str:
        return self(camera, label)

    def snapshot(self, camera: str) -> str:
        return self(camera, "snapshot")

    def status(self, camera: str) -> str:
        return self(camera, "status")

    def active(self, camera: str, rule: str) -> str:
        return self(camera, "active", rule)

    def switch_state(self, camera: str, switch: str) -> str:
        return self(camera, switch, "state")

    def switch_set(self, camera: str, switch: str) -> str:
        return self(camera, switch, "set")

    def line(self, camera: str, line: str, label: str) -> str:
        return self(camera, "line", line, label)

    def occupancy(self, camera: str, zone: str, label: str) -> str:
        return self(camera, "zone", zone, label)

    @property
    def mode_set(self) -> str:
        """Mode commands in (the mode's name). No camera may be named `mode`: its topics would mix."""
        return self("mode", "set")

    @property
    def mode_state(self) -> str:
        return self("mode", "state")

    def relative(self, topic: str) -> list[str] | None:
        """The levels of `topic` below the device root, or None when it is not one of ours."""
        root = self.root + "/"
        return topic[len(root) :].split("/") if topic.startswith(root) else None
