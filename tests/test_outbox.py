"""What leaves the device: alerts drain ahead of bulk messages, held messages publish from memory,
stage timings stay bounded and accurate."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np

from edge.bus.mqtt import WINDOW, Bus
from edge.config.models import MqttConfig
from edge.metrics import Histogram
from edge.outbox import MemoryQueue, Message, Topics, alert_payload
from edge.store import EventLog
from edge.types import AlertRecord, EventRecord
from tests.support import Mosquitto, Subscriber, wait_until

TOPICS = Topics("reflex", "dev1")


def _alert(i: int) -> AlertRecord:
    now = time.time()
    return AlertRecord(f"alert-{i}", "ev", "r", "cam", "person", "warning", "Person on cam", now, i, i / 10)


def _log(tmp_path: Path) -> EventLog:
    events = EventLog(tmp_path / "data", reserve_bytes=0)
    events.ensure_camera("cam", "test")
    events.event_started(EventRecord("ev", "cam", "person", "r", 0.9, (0, 0, 10, 10), time.time(), 0, 0.0))
    return events


def test_an_alert_overtakes_a_backlog_of_large_messages(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A blue-loop job carries JPEG keyframes; an alert queued behind 400 of them (40 MB) overtakes them."""
    events = _log(tmp_path)
    bulk = "x" * 100_000
    for i in range(400):
        events.enqueue(
            "blue_request", TOPICS.blue_request, {"v": 1, "job_id": f"j{i}", "frames": bulk}, f"j{i}"
        )
    sub = Subscriber(mosquitto.port, [TOPICS.blue_request, TOPICS.alerts])
    order: list[str] = []
    lock = threading.Lock()

    def on_ack(acked: list[tuple[str, float]]) -> None:
        with lock:
            order.extend(message_id for message_id, _ in acked)

    bus = Bus(MqttConfig(url=mosquitto.url, discovery=False), TOPICS, events)
    bus.on_ack = on_ack
    bus.start()
    try:
        assert wait_until(lambda: len(order) >= 5, 20)  # the backlog is flowing
        alert = _alert(1)
        with lock:
            done_before = len(order)
        events.alert(alert, alert_payload(alert), TOPICS.alerts)
        bus.notify()
        assert wait_until(lambda: "alert-1" in order, 20)
        with lock:
            waited = order.index("alert-1") - done_before
        # Only messages already in flight (the window) or acknowledged but not yet reported (a batch)
        # may go before it; in id order it would wait behind all the rest.
        assert waited <= 2 * WINDOW, f"the alert waited behind {waited} bulk messages"
        assert done_before + 2 * WINDOW < 400 - 100
        assert wait_until(lambda: len(order) == 401, 60)
        jobs = [m for m in order if m.startswith("j")]
        assert jobs == sorted(jobs, key=lambda j: int(j[1:]))  # bulk kept its own order
    finally:
        bus.stop()
        sub.close()
        events.close()


def test_messages_held_in_memory_are_published_and_acknowledged(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """While the event log cannot take a message, the bus publishes it from memory (MQTT needs no disk)."""
    events = _log(tmp_path)
    memory = MemoryQueue()
    alert = _alert(7)
    token = memory.put(Message("alert", TOPICS.alerts, alert_payload(alert), alert.id))
    sub = Subscriber(mosquitto.port, [TOPICS.alerts])
    bus = Bus(MqttConfig(url=mosquitto.url, discovery=False), TOPICS, events, memory)
    bus.start()
    try:
        assert wait_until(lambda: memory.acked(token), 10)
        assert wait_until(lambda: sub.json_on(TOPICS.alerts), 5)
        assert sub.json_on(TOPICS.alerts)[0]["id"] == "alert-7"
        assert memory.unacked_count() == 0  # acknowledged: nothing left to send
    finally:
        bus.stop()
        sub.close()
        events.close()


def test_memory_queue_drains_alerts_first_then_in_order() -> None:
    memory = MemoryQueue()
    tokens = [memory.put(Message(kind, "t", {}, f"{kind}{i}")) for i, kind in
              enumerate(["event", "alert", "event", "answer", "alert"])]  # fmt: skip
    assert [h.message.message_id for h in memory.pending()] == [
        "alert1",
        "alert4",
        "answer3",
        "event0",
        "event2",
    ]
    assert memory.pending(exclude={tokens[1]})[0].message.message_id == "alert4"


def test_histogram_percentiles_match_the_samples_and_memory_stays_fixed() -> None:
    rng = random.Random(3)
    samples = [rng.lognormvariate(2.0, 0.6) for _ in range(50_000)]  # ~7 ms, a skewed stage time
    hist = Histogram()
    size = hist.buckets.nbytes
    for v in samples:
        hist.add(v)
    for q in (50, 90, 99):
        exact = float(np.percentile(samples, q))
        assert abs(hist.percentile(q) - exact) / exact < 0.03, (q, hist.percentile(q), exact)
    assert hist.count == 50_000 and hist.buckets.nbytes == size and len(hist.recent) <= 256
    assert Histogram().percentile(50) == 0.0
