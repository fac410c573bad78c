"""`edge ask`: send an instruction to a running appliance over MQTT and print its answers.

The appliance answers on `…/answers` with the ask's id: an `ack` at once ("Please wait a moment."),
then an `answer`, a `result` (from the blue loop) or an `error`. This client subscribes before it
asks, so no answer can be missed, and stops at the first final answer or at the timeout.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from edge.bus.mqtt import BusConfigError, new_client, parse_endpoint
from edge.config.models import MqttConfig
from edge.outbox import Topics, new_ask_id

FINAL = ("answer", "result", "error")


def ask(
    cfg: MqttConfig,
    device: str,
    text: str,
    camera: str | None,
    timeout_s: float,
    show: Callable[[dict], None],
) -> int:
    """Ask and print; returns the exit status (0: answered or acknowledged, 1: no reply, 3: error)."""
    endpoint = parse_endpoint(cfg)
    ask_id = new_ask_id("cli")
    topics = Topics(cfg.prefix, device)
    answers_topic = topics.answers
    received: queue.Queue[dict] = queue.Queue()
    subscribed = queue.Queue[bool]()

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            subscribed.put(False)
            return
        client.subscribe(answers_topic, qos=1)

    def on_subscribe(client: mqtt.Client, *_: object) -> None:
        subscribed.put(True)

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            answer = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(answer, dict) and answer.get("id") == ask_id:
            received.put(answer)

    client = new_client(cfg, endpoint, MQTTProtocolVersion.MQTTv311, f"edge-ask-{ask_id}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    except OSError as exc:
        raise BusConfigError(f"cannot reach the broker at {endpoint}: {exc}") from None
    client.loop_start()
    try:
        try:
            if not subscribed.get(timeout=10):
                raise BusConfigError(f"the broker at {endpoint} refused the connection")
        except queue.Empty:
            raise BusConfigError(f"the broker at {endpoint} did not answer") from None
        request = {"id": ask_id, "text": text, **({"camera": camera} if camera else {})}
        client.publish(topics.ask, json.dumps(request), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + timeout_s
        acknowledged = False
        while (left := deadline - time.monotonic()) > 0:
            try:
                answer = received.get(timeout=left)
            except queue.Empty:
                break
            show(answer)
            acknowledged = True
            if answer.get("kind") in FINAL:
                return 3 if answer["kind"] == "error" else 0
        return 0 if acknowledged else 1
    finally:
        client.loop_stop()
        client.disconnect()
