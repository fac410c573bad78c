"""Push channels: alerts reach a webhook or an ntfy topic from the outbox, in order, with retries.

Real HTTP servers on loopback ports play the receivers; alerts go through a real EventLog (and, for
the end-to-end test, the real Journal with its snapshot writer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from edge.bus.push import NtfyChannel, PushWorker, make_channel, start_push_workers
from edge.config import ConfigError, parse_config
from edge.config.models import EdgeConfig
from edge.journal import Journal
from edge.outbox import Topics
from edge.rules import Rule
from edge.rules.events import Transition
from edge.store import EventLog
from edge.store.models import push_channel
from edge.types import AlertRecord, EventRecord, Frame
from tests.support import free_port, wait_until

SECRET = "s3cret-hook-key"
TOKEN = "tk_pushtokenvalue"
TOPIC = "reflex/dev/alerts"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request; `answer` picks each status code."""

    def __init__(self, port: int | None = None, answer: Callable[[Request], int] | None = None) -> None:
        self.port = port or free_port()
        self.answer = answer or (lambda req: 200)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts-topic"

    @property
    def accepted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = Request(self.command, self.path, dict(self.headers.items()), body, 0)
                req.status = receiver.answer(req)
                with receiver._lock:
                    receiver.requests.append(req)
                payload = (
                    b'{"code":40014,"http":400,"error":"attachments not allowed"}'
                    if req.status == 400
                    else b"{}"
                )
                self.send_response(req.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def events(tmp_path: Path) -> Iterator[EventLog]:
    store = EventLog(tmp_path / "data")
    store.ensure_camera("lobby", "rtsp://cam/lobby")
    yield store
    store.close()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def config(push: str, rule_push: str = "[]") -> EdgeConfig:
    text = f"push:\n{push}\nrules:\n  - name: night\n    label: person\n    push: {rule_push}\n"
    return parse_config(text, "c.yaml")


def add_event(events: EventLog, eid: str = "ev1") -> EventRecord:
    ev = EventRecord(
        id=eid, camera="lobby", label="person", rule="night", score=0.9, box=(10.0, 20.0, 110.0, 220.0),
        started_at=time.time(), frame=1, pts=0.1,
    )  # fmt: skip
    events.event_started(ev)
    return ev


def make_alert(aid: str, **kw: object) -> AlertRecord:
    fields: dict = {
        "id": aid, "event_id": "ev1", "rule": "night", "camera": "lobby", "label": "person",
        "severity": "warning", "text": "person on lobby", "at": time.time(), "frame": 2, "pts": 0.2,
        "box": (10.0, 20.0, 110.0, 220.0),
    }  # fmt: skip
    fields.update(kw)
    return AlertRecord(**fields)


def alert(events: EventLog, aid: str, push: tuple[str, ...], **kw: object) -> AlertRecord:
    """An alert committed as the red loop does, queued for the named push channels."""
    rec = make_alert(aid, **kw)
    payload = {
        "v": 1, "id": rec.id, "event_id": rec.event_id, "rule": rec.rule, "camera": rec.camera,
        "label": rec.label, "severity": rec.severity, "text": rec.text, "at": rec.at, "phase": rec.phase,
    }  # fmt: skip
    events.alert(rec, payload, TOPIC, push=push)
    return rec


def pending_ids(events: EventLog, channel: str) -> list[str]:
    return [m.message_id for m in events.outbox_pending(channel=channel)]


def header(value: str) -> str:
    """What ntfy reads from a header value (it decodes RFC 2047 encoded words)."""
    return str(make_header(decode_header(value)))


# -- webhook ---------------------------------------------------------------------------------------


def test_webhook_posts_signed_alert_json_in_order(
    events: EventLog, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.push")
    receiver = Receiver().start()
    cfg = config(
        f"  hook:\n    type: webhook\n    url: {receiver.url}\n    secret: {SECRET}\n"
        "    headers: {X-Site: lobby-1}\n",
        "[hook]",
    )
    add_event(events)
    sent = [alert(events, f"a{i}", ("hook",)) for i in range(3)]
    alert(events, "quiet", ())  # a rule without push channels: MQTT only

    workers = start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: len(receiver.accepted) == 3, 5), receiver.requests
    time.sleep(0.2)  # nothing else arrives
    receiver.stop()

    got = receiver.accepted
    assert len(receiver.requests) == 3
    assert [json.loads(r.body)["id"] for r in got] == [a.id for a in sent]
    queued = {m.message_id: m.payload for m in events.outbox_pending(channel="mqtt")}
    for req in got:
        assert req.method == "POST" and req.path == "/alerts-topic"
        assert req.headers["Content-Type"] == "application/json"
        assert req.headers["X-Site"] == "lobby-1"
        # the body is the MQTT alert payload byte for byte, and the signature verifies over it
        assert req.body.decode() == queued[json.loads(req.body)["id"]]
        expected = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(req.headers["X-Reflex-Signature"], expected)
        assert abs(int(req.headers["X-Reflex-Timestamp"]) - time.time()) < 10
    assert wait_until(lambda: events.outbox_depth(push_channel("hook")) == 0, 2)
    assert events.outbox_depth("mqtt") == 4  # MQTT's own queue is untouched by push delivery
    assert workers[0].delivered == 3
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "delivered" in logged and SECRET not in logged and "alerts-topic" not in logged
    assert SECRET not in repr(cfg)


def test_webhook_without_secret_sends_no_signature(events: EventLog, stop: threading.Event) -> None:
    receiver = Receiver().start()
    cfg = config(f"  hook:\n    type: webhook\n    url: {receiver.url}\n", "[hook]")
    add_event(events)
    alert(events, "a1", ("hook",))
    start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: len(receiver.accepted) == 1, 5)
    receiver.stop()
    assert "X-Reflex-Signature" not in receiver.accepted[0].headers
    assert "X-Reflex-Timestamp" in receiver.accepted[0].headers


# -- retries ---------------------------------------------------------------------------------------


def test_receiver_down_then_failing_gets_every_alert_once_in_order(
    events: EventLog, stop: threading.Event
) -> None:
    """Connection refused, then HTTP 500 twice, then up: all alerts arrive, in order, none twice."""
    port = free_port()  # nothing listens yet: connection refused
    failures = iter([500, 500])
    receiver = Receiver(port, answer=lambda req: next(failures, 200))
    cfg = config(
        f"  hook:\n    type: webhook\n    url: {receiver.url}\n    retry_min_s: 0.05\n    retry_max_s: 0.2\n",
        "[hook]",
    )
    add_event(events)
    ids = []
    for i in range(3):
        ids.append(alert(events, f"a{i}", ("hook",)).id)
    [worker] = start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: worker.failures >= 2, 5)  # refused at least twice
    assert worker.last_error is not None and "cannot connect" in worker.last_error
    assert pending_ids(events, push_channel("hook")) == ids  # waiting, none skipped
    receiver.start()
    for i in range(3, 6):  # alerts keep coming while it recovers
        ids.append(alert(events, f"a{i}", ("hook",)).id)
        worker.notify()
    assert wait_until(lambda: len(receiver.accepted) == 6, 10), receiver.requests
    time.sleep(0.2)
    receiver.stop()

    delivered = [json.loads(r.body)["id"] for r in receiver.accepted]
    assert delivered == ids  # in order, nothing lost, nothing twice
    assert [r.status for r in receiver.requests[:2]] == [500, 500]
    assert [json.loads(r.body)["id"] for r in receiver.requests[:3]] == ["a0"] * 3  # the head is retried
    assert pending_ids(events, push_channel("hook")) == []
    with events._engine.connect() as conn:
        attempts = conn.exec_driver_sql(
            "SELECT attempts FROM outbox WHERE channel = 'push:hook' AND message_id = 'a0'"
        ).scalar()
    assert attempts == worker.failures >= 4  # every failed try is counted in the outbox


def test_backlog_survives_a_restart(events: EventLog, tmp_path: Path) -> None:
    """Alerts queued while no worker runs (appliance down) go out when it starts again."""
    receiver = Receiver().start()
    cfg = config(f"  hook:\n    type: webhook\n    url: {receiver.url}\n", "[hook]")
    add_event(events)
    alert(events, "a1", ("hook",))
    events.close()
    reopened = EventLog(tmp_path / "data")
    stop = threading.Event()
    try:
        start_push_workers(reopened, cfg, stop, poll_s=0.05)
        assert wait_until(lambda: len(receiver.accepted) == 1, 5)
        assert wait_until(lambda: reopened.outbox_depth(push_channel("hook")) == 0, 2)
    finally:
        stop.set()
        receiver.stop()
        reopened.close()


def test_stop_ends_a_worker_promptly_even_while_backing_off(events: EventLog) -> None:
    cfg = config(
        f"  hook:\n    type: webhook\n    url: http://127.0.0.1:{free_port()}/x\n    retry_min_s: 30\n",
        "[hook]",
    )
    add_event(events)
    alert(events, "a1", ("hook",))
    stop = threading.Event()
    [worker] = start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: worker.failures == 1, 5)
    started = time.monotonic()
    stop.set()
    worker.join(2)
    assert not worker.is_alive() and time.monotonic() - started < 1
    assert pending_ids(events, push_channel("hook")) == ["a1"]  # still queued for next time


def test_backoff_doubles_within_bounds(events: EventLog) -> None:
    cfg = config("  hook:\n    type: webhook\n    url: http://127.0.0.1:9/x\n")
    worker = PushWorker(
        "hook", make_channel("hook", cfg.push["hook"]), events, threading.Event(),
        retry_min_s=1.0, retry_max_s=10.0,
    )  # fmt: skip
    delays = [worker.backoff(n) for n in range(1, 8)]
    assert all(1.0 <= d <= 10.0 for d in delays)
    assert delays[0] < 1.3 and 3.1 < delays[2] < 4.9 and delays[-1] == 10.0


# -- ntfy ------------------------------------------------------------------------------------------


def ntfy_cfg(url: str, extra: str = "") -> EdgeConfig:
    return config(f"  phones:\n    type: ntfy\n    url: {url}\n    token: {TOKEN}\n{extra}", "[phones]")


def test_ntfy_attaches_the_snapshot_written_after_the_alert(
    events: EventLog, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.push")
    receiver = Receiver().start()
    cfg = ntfy_cfg(receiver.url)
    add_event(events)
    text = "Person à l'entrée ⚠"
    alert(events, "a1", ("phones",), text=text)
    # the snapshot writer runs just after the alert commit
    image = np.full((120, 160, 3), 90, np.uint8)
    threading.Timer(
        0.3, events.save_snapshot, ("ev1", image, (10.0, 20.0, 60.0, 100.0), "person", 0.9)
    ).start()

    start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: len(receiver.accepted) == 1, 5)
    receiver.stop()
    req = receiver.accepted[0]
    snapshot = events.alerts(event_id="ev1")[0]["snapshot"]
    assert req.method == "PUT" and req.path == "/alerts-topic"
    assert req.body == (events.snapshot_dir / snapshot).read_bytes() and req.body[:2] == b"\xff\xd8"
    assert req.headers["Filename"] == "snapshot.jpg"
    assert header(req.headers["Message"]) == text
    assert req.headers["Message"].isascii()  # RFC 2047, since HTTP headers are not UTF-8
    assert header(req.headers["Title"]) == "Reflex: person on lobby"
    assert req.headers["Priority"] == "4"
    assert header(req.headers["Tags"]).split(",") == ["warning", "person", "lobby"]
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "delivered with snapshot" in logged and TOKEN not in logged and "alerts-topic" not in logged


def test_ntfy_without_snapshot_sends_text_after_a_short_wait(events: EventLog, stop: threading.Event) -> None:
    receiver = Receiver().start()
    cfg = ntfy_cfg(receiver.url, "    priority: {critical: 5}\n")
    add_event(events)
    alert(events, "a1", ("phones",), severity="critical", label="fire", text="Fire!")
    queued = time.monotonic()
    start_push_workers(events, cfg, stop, snapshot_wait_s=0.3, poll_s=0.05)
    assert wait_until(lambda: len(receiver.accepted) == 1, 5)
    assert time.monotonic() - queued >= 0.25  # waited for a snapshot that never came
    receiver.stop()
    req = receiver.accepted[0]
    assert req.method == "POST" and req.body == b"Fire!" and "Filename" not in req.headers
    assert req.headers["Priority"] == "5"
    assert header(req.headers["Title"]) == "Reflex: fire on lobby"
    assert header(req.headers["Tags"]).split(",")[:2] == ["rotating_light", "fire"]


def test_ntfy_server_refusing_attachments_still_gets_the_alert(
    events: EventLog, stop: threading.Event
) -> None:
    receiver = Receiver(answer=lambda req: 400 if "Filename" in req.headers else 200).start()
    cfg = ntfy_cfg(receiver.url)
    add_event(events)
    alert(events, "a1", ("phones",))
    events.save_snapshot("ev1", np.zeros((60, 80, 3), np.uint8), None, "person", 0.9)
    start_push_workers(events, cfg, stop, poll_s=0.05)
    assert wait_until(lambda: len(receiver.accepted) == 1, 5)
    receiver.stop()
    assert [r.method for r in receiver.requests] == ["PUT", "POST"]
    assert receiver.accepted[0].body == b"person on lobby"
    assert wait_until(lambda: events.outbox_depth(push_channel("phones")) == 0, 2)


def test_ntfy_basic_auth_and_retracted_alert(events: EventLog) -> None:
    cfg = config(
        "  phones:\n    type: ntfy\n    url: https://ntfy.example/t\n    username: staff\n    password: pw\n"
        "    attach_snapshot: false\n"
    )
    channel = make_channel("phones", cfg.push["phones"])
    assert isinstance(channel, NtfyChannel) and not channel.wants_snapshot
    add_event(events)
    alert(events, "a1", ("phones",), phase="retracted")
    headers, _ = channel.notification(events.outbox_pending(channel=push_channel("phones"))[0])
    assert headers["Authorization"] == "Basic c3RhZmY6cHc="  # staff:pw
    assert headers["Title"].endswith("(retracted)") and headers["Priority"] == "2"


# -- the journal routes rule alerts to their channels -------------------------------------------------


def test_journal_queues_rule_alerts_for_their_channels_and_ntfy_gets_the_snapshot(
    events: EventLog, stop: threading.Event
) -> None:
    receiver = Receiver().start()
    text = (
        f"push:\n  phones:\n    type: ntfy\n    url: {receiver.url}\n"
        "rules:\n  - name: night\n    label: person\n    push: [phones]\n"
        "  - name: day\n    label: person\n"
    )
    cfg = parse_config(text, "c.yaml")
    journal = Journal(events, Topics(cfg.mqtt.prefix, cfg.device.id), [Rule(r) for r in cfg.rules])
    image = np.full((120, 160, 3), 120, np.uint8)
    ev = add_event(events)
    frame = Frame(camera="lobby", index=2, pts=0.2, image=image, arrived=time.monotonic())
    try:
        for aid, rule in (("a-night", "night"), ("a-day", "day"), ("a-watch", "person")):
            journal.handle(Transition("alert", ev, 2, 0.2, make_alert(aid, rule=rule)), frame)
        assert pending_ids(events, push_channel("phones")) == ["a-night"]
        assert len(pending_ids(events, "mqtt")) == 3  # every alert still goes to MQTT
        start_push_workers(events, cfg, stop, poll_s=0.05)
        assert wait_until(lambda: len(receiver.accepted) == 1, 5)
    finally:
        journal.close()
        receiver.stop()
    req = receiver.accepted[0]
    assert req.method == "PUT" and req.body[:2] == b"\xff\xd8"  # the journal's snapshot, attached
    assert header(req.headers["Message"]) == "person on lobby"
    assert pending_ids(events, push_channel("phones")) == []
    assert len(receiver.requests) == 1  # the rule without push and the --watch rule sent nothing


# -- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "push:\n  phones:\n    type: ntfy\n    url: https://ntfy.sh/t\n"
            "rules:\n  - name: r\n    label: person\n    push: [pager]\n",
            "c.yaml:8: rules.0.push.0: rule 'r' names unknown push channel 'pager' (push: phones)",
        ),
        (
            "rules:\n  - name: r\n    label: person\n    push: [pager]\n",
            "c.yaml:4: rules.0.push.0: rule 'r' names unknown push channel 'pager' (push: none configured)",
        ),
        (
            "push:\n  hook:\n    type: webhook\n    url: https://x.example/h\n    secrett: a\n",
            "c.yaml:5: push.hook.secrett: unknown key 'secrett'",
        ),
        (
            "push:\n  hook:\n    url: https://x.example/h\n",
            "c.yaml:2: push.hook: type must be one of: webhook, ntfy",
        ),
        (
            "push:\n  hook:\n    url: https://x.example/h\n    type: email\n",
            "c.yaml:4: push.hook.type: type must be one of: webhook, ntfy",
        ),
        (
            "push:\n  phones:\n    type: ntfy\n    url: https://ntfy.sh/\n",
            "c.yaml:4: push.phones.url: Value error, url must name the topic",
        ),
        (
            "push:\n  hook:\n    type: webhook\n    url: ftp://x.example/h\n",
            "c.yaml:4: push.hook.url: Value error, url must be an http:// or https:// URL",
        ),
        (
            "push:\n  hook:\n    type: webhook\n    url: https://u:p@x.example/h\n",
            "c.yaml:4: push.hook.url: Value error, url must not carry user:password",
        ),
        (
            "push:\n  Phones:\n    type: ntfy\n    url: https://ntfy.sh/t\n",
            "c.yaml:2: push.Phones.[key]: Value error, push channel name 'Phones'",
        ),
        (
            "push:\n  phones:\n    type: ntfy\n    url: https://ntfy.sh/t\n    token: a\n    username: b\n"
            "    password: c\n",
            "c.yaml:2: push.phones: Value error, give either token or username/password",
        ),
        (
            "push:\n  phones:\n    type: ntfy\n    url: https://ntfy.sh/t\n    priority: {critical: 9}\n",
            "c.yaml:5: push.phones.priority.critical: Input should be less than or equal to 5",
        ),
        (
            "push:\n  hook:\n    type: webhook\n    url: https://x.example/h\n    retry_min_s: 5\n"
            "    retry_max_s: 1\n",
            "c.yaml:2: push.hook: Value error, retry_max_s must be at least retry_min_s",
        ),
        (
            "push:\n  hook:\n    type: webhook\n    url: https://x.example/h\n"
            "    headers: {X-Reflex-Signature: forged}\n",
            "c.yaml:5: push.hook.headers: Value error, header 'X-Reflex-Signature' is set by the appliance",
        ),
        (
            "push:\n  phones:\n    type: ntfy\n    url: https://ntfy.sh/t\n"
            "rules:\n  - name: r\n    label: person\n    push: [phones, phones]\n",
            "c.yaml:8: rules.0.push: Value error, a push channel is listed twice",
        ),
    ],
)
def test_bad_push_config_is_one_clear_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message
