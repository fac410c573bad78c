"""The MQTT bus: drains the outbox to the broker, keeps retained state, takes commands.

Why it is built this way:

- **Nothing is lost.** Alerts and events are already committed to the SQLite outbox when they get
  here. The bus publishes outbox rows in id order at QoS 1 and marks a row delivered only when the
  broker's PUBACK for it arrives. After any disconnect it starts again from the oldest
  unacknowledged row, so a broker outage delays messages and may repeat a few (consumers
  de-duplicate by `id`), but never drops or reorders one.
- **Alerts first.** Rows drain by priority (alerts, answers, events, bulk such as blue-loop jobs
  with JPEG keyframes), each priority in id order, and alerts may use a few in-flight slots beyond
  the window: an alert never waits behind a large message.
- **One fresh client per connection.** paho re-sends its own queued messages on reconnect, which
  would race with the outbox's re-send; a new client per connection leaves the outbox the only
  source of truth. The connection thread does the backoff (jittered, reconnect_min_s..max_s), reset
  by every successful connection: a blip soon after another is retried as quickly as the first.
- **Memory when the disk is gone.** Messages the event log could not take wait in a MemoryQueue;
  MQTT needs no disk, so they are published from memory too, and their PUBACKs recorded there.
- **Callbacks never touch the database.** paho calls back on its network thread while holding its
  own locks; PUBACKs and commands are handed over through queues to the bus thread (acks, batched
  into one commit) and the command thread (DB writes, answers).
- **State is not history.** Counts, snapshot, camera status, switch states, rule activity and stats
  are "latest value" topics: kept in memory, published retained, and all re-published on every
  connect (a broker restarted without persistence gets them back at once). Retained messages of
  ours that are not current state (a removed camera's count and JPEG, a removed rule's discovery
  config) are found by a short sweep after each connect and cleared, or handed to the filter's
  handler (Home Assistant's discovery migration needs its messages in an order: `publish_once`).
- **Subscriptions are registered, not hard-coded.** `subscribe(filter, handler)` (shared
  subscriptions `$share/group/...` included); handlers run on the command thread, never on paho's.
- **The bus thread has a heartbeat** (edge.notify, `start(heart)`): it beats on every pass, while it
  backs off and while it waits for a CONNACK, so systemd's watchdog sees a hung bus thread and not a
  broker that is away. The command thread is not watched: a command may rightly take minutes (a
  runtime rule that first needs the detector loads it, a TensorRT engine build included).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.backoff import Backoff
from edge.config.models import MqttConfig
from edge.notify import NO_HEART, Heart
from edge.outbox import OFFLINE, ONLINE, MemoryQueue, Priority, Topics
from edge.redact import redact
from edge.store import EventLog, StoreError
from edge.store.db import dumps

log = logging.getLogger("edge.bus")

WINDOW = 64
"""Outbox messages in flight (published, PUBACK pending) at once: enough to keep a LAN broker busy,
few enough that a reconnect re-sends little."""
ALERT_EXTRA = 16
"""In-flight slots only alerts may use: a window full of events or jobs never holds an alert back."""
UNRECORDED_MAX = 100_000
"""Acknowledgements kept for a later commit while the event log refuses writes (full disk)."""
ACK_FLUSH_S = 0.05
"""PUBACKs are committed in batches at most this old: one commit for many acks."""
CONNECT_TIMEOUT_S = 10.0
CONNECT_ALLOW_S = 60.0
"""How long `client.connect` may block the bus thread before it counts as hung: a DNS lookup (glibc: 5 s
x 2 attempts x up to 3 name servers), then paho's TCP connect and TLS handshake (5 s timeouts)."""
REFUSED_RETRY_S = 30.0
"""A broker that refuses the connection (bad credentials, banned) is retried no faster than this."""
STOP_DRAIN_S = 3.0
"""On a clean stop, how long the bus keeps publishing what is queued before it says `offline`."""
COMMAND_QUEUE = 1024
"""Commands waiting for the command thread. Past this, a message is handed over marked `busy`
(its handler answers "busy" cheaply instead of doing the work); past OVERFLOW_MAX it is dropped."""
OVERFLOW_MAX = 10_000
SWEEP_S = 5.0
"""After a connect, retained messages under the sweep filters arriving this long are checked against
current state; then those subscriptions are dropped (our own publications are not echoed to us)."""

# MQTT 5 CONNACK "Unsupported Protocol Version", and MQTT 3.1.1's "unacceptable protocol version"
# (paho reports the latter as reason code 1 on a 3.1.1 connection).
_UNSUPPORTED_PROTOCOL = {132, 1}


class BusConfigError(ValueError):
    """The MQTT settings cannot work (bad URL, unreadable password file or certificate)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_endpoint(cfg: MqttConfig) -> Endpoint:
    """`mqtt[s]://[user:pass@]host[:port]` plus the credential fields; one-line errors."""
    if not cfg.url:
        raise BusConfigError("no MQTT URL configured")
    parts = urlsplit(cfg.url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise BusConfigError(f"MQTT URL {redact(cfg.url)!r}: expected mqtt[s]://[user:pass@]host:port")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise BusConfigError(f"MQTT URL {redact(cfg.url)!r}: bad port") from None
    username = cfg.username or (unquote(parts.username) if parts.username else None)
    password = cfg.password.get_secret_value() if cfg.password else None
    password = password or (unquote(parts.password) if parts.password else None)
    if cfg.password_file:
        try:
            password = Path(cfg.password_file).read_text().strip()
        except OSError as exc:
            why = exc.strerror or exc
            raise BusConfigError(f"cannot read MQTT password_file {cfg.password_file}: {why}") from None
    return Endpoint(parts.hostname, port, tls, username, password)


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """TLS for mqtts://: the broker's CA (default: the system's), and a client certificate if set."""
    try:
        context = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise BusConfigError(f"MQTT TLS setup failed: {exc}") from None
    if cfg.tls_insecure:
        context.check_hostname = False
    return context


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """TCP_NODELAY on every MQTT socket of ours. Without it, Nagle's algorithm holds a small message
    (an answer, an alert) while our last small segment (the PUBACK of the ask) waits for the broker's
    delayed ACK: ~40 ms added to answers and alerts for nothing. paho does not set it."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def new_client(
    cfg: MqttConfig,
    endpoint: Endpoint,
    protocol: MQTTProtocolVersion,
    client_id: str = "",
    context: ssl.SSLContext | None = None,
    *,
    reconnect: bool = False,
) -> mqtt.Client:
    """A paho client with the configured credentials and TLS. `reconnect`: paho reconnects by itself
    (tools that only listen); the bus owns its reconnects, one fresh client per connection."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, reconnect_on_failure=reconnect
    )
    client.on_socket_open = _no_delay
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(context or tls_context(cfg))
        client.tls_insecure_set(cfg.tls_insecure)
    return client


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the broker, as a subscription handler gets it."""

    topic: str
    payload: bytes
    retained: bool = False
    busy: bool = False
    """The command queue overflowed: answer cheaply ("busy"), do not do the work."""


Handler = Callable[[Received], None]
StaleHandler = Callable[[dict[str, bytes]], None]
"""Given the stale retained messages (topic -> payload) a sweep found under its filter."""
_Inflight = tuple[str, int, str]
"""('db', outbox id, message id) or ('mem', memory token, message id)."""
Acked = tuple[str, int, str, float]
"""(source, outbox id or token, message id, time.monotonic() of the PUBACK)."""


def match_filter(subscription: str) -> str:
    """The topic filter a message is matched against: a shared subscription's `$share/group/` goes."""
    if subscription.startswith("$share/"):
        return subscription.split("/", 2)[2]
    return subscription


class Bus:
    """One per appliance. Thread-safe: the red loops, the journal and the admin page call in."""

    def __init__(
        self, cfg: MqttConfig, topics: Topics, events: EventLog, memory: MemoryQueue | None = None
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.device = topics.device
        self.events = events
        self.memory = memory if memory is not None else MemoryQueue()
        self.endpoint = parse_endpoint(cfg)
        self.on_ack: Callable[[list[tuple[str, float]]], None] | None = None
        """Called (bus thread) with (message id, time.monotonic() of its PUBACK) once recorded."""
        self.availability = topics.availability
        self.connected = threading.Event()
        self.stop_event = threading.Event()
        self.last_error = ""
        v311 = cfg.protocol == "3.1.1"
        self._protocol = MQTTProtocolVersion.MQTTv311 if v311 else MQTTProtocolVersion.MQTTv5
        self._wake = threading.Event()
        self._acks: deque[tuple[mqtt.Client, int, float]] = deque()
        self._lost = threading.Event()
        self._connack: ReasonCode | None = None
        self._state: dict[str, tuple[bytes, int]] = {}
        self._dirty: set[str] = set()
        self._state_lock = threading.Lock()
        self._subscriptions: dict[str, tuple[int, Handler]] = {}
        self._subs_changed = False
        self._sweep_filters: list[str] = []
        self._sweep_handlers: dict[str, StaleHandler] = {}
        self._once: list[tuple[str, bytes, int, bool]] = []
        """Messages to publish once, in order, after the state (`publish_once`)."""
        self._commands: queue.Queue[Received | None] = queue.Queue(COMMAND_QUEUE)
        self._overflow: deque[Received] = deque()
        self._threads: list[threading.Thread] = []
        self._tls_context = tls_context(cfg) if self.endpoint.tls else None
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._unrecorded: list[int] = []
        """Outbox ids acknowledged by the broker whose delivery the event log could not record yet."""
        self._heart: Heart = NO_HEART

    # -- public API -------------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Call `handler` (on the command thread) for every message matching `topic_filter`; shared
        subscriptions (`$share/group/filter`) work too. Kept across reconnects; may be called while
        connected."""
        with self._state_lock:
            self._subscriptions[topic_filter] = (qos, handler)
            self._subs_changed = True
        self._wake.set()

    def sweep(self, topic_filter: str, on_stale: StaleHandler | None = None) -> None:
        """Retained messages under `topic_filter` that are not current state get cleared after every
        connect (HA discovery configs, a removed camera's counts and snapshot). With `on_stale`, they
        are handed to it instead (on the sweep's thread), with those of every filter that has the same
        handler, all at once, to deal with in the right order (Home Assistant's discovery migration)."""
        self._sweep_filters.append(topic_filter)
        if on_stale is not None:
            self._sweep_handlers[topic_filter] = on_stale

    def publish_once(self, messages: list[tuple[str, bytes, bool]], qos: int = 1) -> None:
        """Publish (topic, payload, retain) `messages` now, in this order, after pending state; once:
        not state, so not re-published after a reconnect (lost with the connection)."""
        with self._state_lock:
            self._once.extend((topic_, payload, qos, retain) for topic_, payload, retain in messages)
        self._wake.set()

    def start(self, heart: Heart = NO_HEART) -> None:
        """The bus thread (beating `heart`) and the command thread."""
        self._heart = heart
        for name, target in (("mqtt", self._run), ("mqtt-commands", self._run_commands)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 8.0) -> None:
        """Publish what is pending (briefly), say `offline`, disconnect."""
        self.stop_event.set()
        self._wake.set()
        with contextlib.suppress(queue.Full):
            self._commands.put(None, timeout=1.0)
        for thread in self._threads:
            thread.join(timeout)

    def notify(self) -> None:
        """New outbox rows (or state) are waiting: publish them now rather than at the next poll."""
        self._wake.set()

    def set_state(self, topic_: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish `payload` retained on `topic_` now and after every reconnect; unchanged is a no-op."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._state_lock:
            if self._state.get(topic_) == (data, qos):
                return
            self._state[topic_] = (data, qos)
            self._dirty.add(topic_)
        self._wake.set()

    def wait_drained(self, timeout: float) -> bool:
        """True once every MQTT outbox row is acknowledged (tools/bench's drain rate)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events.outbox_depth() == 0:
                return True
            time.sleep(0.05)
        return self.events.outbox_depth() == 0

    # -- connection thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self._heart.beat()
            client = self._make_client()
            if self._connect(client):
                self._backoff.reset()  # connected: the next outage starts from the shortest delay
                self._serve(client)
            client.loop_stop()
            if self.stop_event.is_set():
                break
            delay = self._backoff.next()
            code = self._connack
            if code is not None and code.is_failure and code.value not in _UNSUPPORTED_PROTOCOL:
                delay = max(delay, REFUSED_RETRY_S)  # refused (credentials?): do not hammer the broker
            self._heart.wait(self.stop_event, delay)

    def _make_client(self) -> mqtt.Client:
        client_id = self.cfg.client_id or f"reflex-{self.device}"
        client = new_client(self.cfg, self.endpoint, self._protocol, client_id, self._tls_context)
        client.max_inflight_messages_set(WINDOW + ALERT_EXTRA + 8)
        client.will_set(self.availability, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect(self, client: mqtt.Client) -> bool:
        self._lost.clear()
        self.connected.clear()
        self._connack = None
        try:
            kwargs = {"clean_start": True} if self._protocol == MQTTProtocolVersion.MQTTv5 else {}
            self._heart.allow(CONNECT_ALLOW_S)
            client.connect(self.endpoint.host, self.endpoint.port, self.cfg.keepalive_s, **kwargs)
        except (OSError, ssl.SSLError) as exc:
            self._report_down(f"cannot reach broker {self.endpoint}: {exc}")
            return False
        client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not (self.connected.is_set() or self._lost.is_set() or self.stop_event.is_set()):
            self._heart.beat()
            if time.monotonic() > deadline:
                self._report_down(f"broker {self.endpoint} did not answer CONNECT")
                client.disconnect()
                return False
            time.sleep(0.01)
        if self.connected.is_set():
            return True
        code = self._connack
        if (
            code is not None
            and code.value in _UNSUPPORTED_PROTOCOL
            and self.cfg.protocol == "auto"
            and self._protocol == MQTTProtocolVersion.MQTTv5
        ):
            log.warning("broker %s refuses MQTT 5; falling back to MQTT 3.1.1", self.endpoint)
            self._protocol = MQTTProtocolVersion.MQTTv311
        return False

    def _report_down(self, why: str) -> None:
        if why != self.last_error:
            log.warning("MQTT: %s (alerts wait in the outbox; retrying)", why)
        self.last_error = why

    def _subscribe_all(self, client: mqtt.Client) -> None:
        with self._state_lock:
            subscriptions = [(f, qos) for f, (qos, _) in self._subscriptions.items()]
            self._subs_changed = False
        if subscriptions:
            client.subscribe(subscriptions)

    def _serve(self, client: mqtt.Client) -> None:
        """Connected: subscribe, say online, re-publish state, then drain until the connection ends."""
        self.last_error = ""
        self._subscribe_all(client)
        client.publish(self.availability, ONLINE, qos=1, retain=True)
        with self._state_lock:
            self._dirty = set(self._state)
        log.info("MQTT connected to %s (MQTT %s)", self.endpoint, "5" if self._protocol == 5 else "3.1.1")
        if self._sweep_filters:
            threading.Thread(target=self._sweep, name="mqtt-sweep", daemon=True).start()
        inflight: dict[int, _Inflight] = {}  # mid -> where it came from
        cursors: dict[Priority, int] = dict.fromkeys(Priority, 0)
        pending_acks: list[Acked] = []
        last_flush = time.monotonic()
        stop_by: float | None = None
        while not self._lost.is_set():
            self._heart.beat()
            self._wake.clear()
            if self._subs_changed:
                self._subscribe_all(client)
            self._take_acks(client, inflight, pending_acks)
            now = time.monotonic()
            if pending_acks and (now - last_flush >= ACK_FLUSH_S or len(pending_acks) >= WINDOW):
                self._commit_acks(pending_acks)
                pending_acks = []
                last_flush = now
            fetched = self._publish_memory(client, inflight, pending_acks)
            fetched += self._publish_outbox(client, inflight, cursors)
            self._publish_state(client)
            if self.stop_event.is_set():
                # Stopping: send what the red loops queued last (event ends) for a moment, then go.
                stop_by = stop_by or now + STOP_DRAIN_S
                if (not inflight and not fetched) or now > stop_by:
                    self._commit_acks(pending_acks)
                    self._goodbye(client)
                    return
            self._wake.wait(ACK_FLUSH_S if (inflight or pending_acks or stop_by) else 0.5)
        self._take_acks(client, inflight, pending_acks)
        self._commit_acks(pending_acks)
        self.connected.clear()
        log.warning("MQTT connection to %s lost; %d messages in flight will be re-sent", self.endpoint,
                    len(inflight))  # fmt: skip

    def _take_acks(self, client: mqtt.Client, inflight: dict[int, _Inflight], into: list[Acked]) -> None:
        """Resolve PUBACKed mids to outbox rows (only this thread touches `inflight`). An ack of an
        earlier connection's client is ignored: its mids are reused by the new client."""
        while self._acks:
            acker, mid, at = self._acks.popleft()
            if acker is client and (sent := inflight.pop(mid, None)) is not None:
                into.append((*sent, at))

    def _room(self, inflight: dict[int, _Inflight], priority: Priority) -> int:
        return (WINDOW + (ALERT_EXTRA if priority == Priority.ALERT else 0)) - len(inflight)

    def _publish_memory(self, client: mqtt.Client, inflight: dict[int, _Inflight], acked: list[Acked]) -> int:
        """Messages the event log could not take: published from memory (MQTT needs no disk).

        In flight, or acknowledged with the acknowledgement not yet recorded (`acked`, committed in
        batches): not sent again. Without the second, each loop turn until the batch was committed
        re-sent the message just acknowledged."""
        if not self.memory.unacked_count():
            return 0
        flying = {ref for source, ref, _ in inflight.values() if source == "mem"}
        flying.update(ref for source, ref, _, _ in acked if source == "mem")
        sent = 0
        for held in self.memory.pending(exclude=flying):
            message = held.message
            if self._room(inflight, message.priority) <= 0:
                break
            info = client.publish(message.topic, dumps(message.payload), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost.set()
                break
            inflight[info.mid] = ("mem", held.token, message.message_id)
            sent += 1
        return sent

    def _publish_outbox(
        self, client: mqtt.Client, inflight: dict[int, _Inflight], cursors: dict[Priority, int]
    ) -> int:
        """Publish the next rows of each priority in turn (alerts first); returns rows fetched.
        `cursors` holds, per priority, the last row id published on this connection."""
        fetched = 0
        for priority in Priority:
            room = self._room(inflight, priority)
            if room <= 0:
                continue
            try:
                rows = self.events.outbox_pending(limit=room, after=cursors[priority], priority=priority)
            except StoreError as exc:
                log.error("MQTT: cannot read the outbox: %s", exc)
                return fetched
            fetched += len(rows)
            for row in rows:
                info = client.publish(row.topic, row.payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._lost.set()  # the socket is gone: start over from the oldest unacked row
                    return fetched
                inflight[info.mid] = ("db", row.id, row.message_id)
                cursors[priority] = row.id
        return fetched

    def _publish_state(self, client: mqtt.Client) -> None:
        with self._state_lock:
            dirty = [(t, *self._state[t]) for t in self._dirty]
            self._dirty.clear()
            once, self._once = self._once, []
        for topic_, payload, qos in dirty:
            client.publish(topic_, payload, qos=qos, retain=True)
        for topic_, payload, qos, retain in once:
            client.publish(topic_, payload, qos=qos, retain=retain)

    def _commit_acks(self, acked: list[Acked]) -> None:
        if not acked:
            return
        for source, ref, _, _ in acked:
            if source == "mem":
                self.memory.ack(ref)
        rows = self._unrecorded + [ref for source, ref, _, _ in acked if source == "db"]
        try:
            self.events.mark_delivered(rows)
            self._unrecorded = []
        except StoreError as exc:
            # Kept and recorded with the next batch; sent again if we restart first (consumers de-duplicate).
            log.error("MQTT: cannot record %d acknowledgements yet: %s", len(rows), exc)
            self._unrecorded = rows[-UNRECORDED_MAX:]
        if self.on_ack is not None:
            self.on_ack([(message_id, at) for _, _, message_id, at in acked])

    def _goodbye(self, client: mqtt.Client) -> None:
        """A clean stop says `offline` itself (the Last Will is only for crashes)."""
        info = client.publish(self.availability, OFFLINE, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(2.0)
        client.disconnect()

    # -- retained sweep (its own short-lived client) ------------------------------------------------

    def _sweep(self) -> None:
        """Read the retained messages under the sweep filters with a second, listen-only client, and
        clear those that are not current state. A separate client, so that none of its filters overlap
        the bus's own subscriptions (which would deliver a command twice)."""
        found: dict[str, bytes] = {}
        client_id = f"{self.cfg.client_id or f'reflex-{self.device}'}-sweep"
        client = new_client(self.cfg, self.endpoint, self._protocol, client_id, self._tls_context)

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            if not reason.is_failure:
                c.subscribe([(f, 1) for f in self._sweep_filters])

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            if message.retain:
                found[message.topic] = bytes(message.payload)

        client.on_connect, client.on_message = on_connect, on_message
        try:
            client.connect(self.endpoint.host, self.endpoint.port, self.cfg.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            log.debug("MQTT: retained sweep could not connect: %s", exc)
            return
        client.loop_start()
        self.stop_event.wait(SWEEP_S)
        client.loop_stop()
        with contextlib.suppress(Exception):
            client.disconnect()
        handed: dict[StaleHandler, dict[str, bytes]] = {}  # one call per handler, with all of its
        for topic_, payload in found.items():
            handler = next((h for f, h in self._sweep_handlers.items() if mqtt.topic_matches_sub(f, topic_)),
                           None)  # fmt: skip
            if handler is None:
                self._clear_if_stale(topic_, payload)
            elif self._stale(topic_, payload):
                handed.setdefault(handler, {})[topic_] = payload
        for handler, stale in handed.items():
            try:
                handler(stale)
            except Exception:
                log.exception("MQTT: cannot deal with %d stale retained message(s): %s", len(stale),
                              ", ".join(sorted(stale)))  # fmt: skip

    def _stale(self, topic_: str, payload: bytes) -> bool:
        if not payload or topic_ == self.availability or topic_.endswith("/set"):
            return False
        with self._state_lock:
            return topic_ not in self._state

    def _clear_if_stale(self, topic_: str, payload: bytes) -> None:
        if self._stale(topic_, payload):
            log.info("MQTT: clearing retained %s (no longer configured)", topic_)
            self.set_state(topic_, b"")

    # -- paho callbacks (network thread: no database, no blocking) -------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:  # fmt: skip
        self._connack = reason
        if reason.is_failure:
            self._report_down(f"broker {self.endpoint} refused the connection: {reason}")
            self._lost.set()
        else:
            self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                       properties: object) -> None:  # fmt: skip
        self.connected.clear()
        self._lost.set()
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                    properties: object) -> None:  # fmt: skip
        if reason.is_failure:
            # The broker refused this message (e.g. not authorised): it stays in the outbox.
            log.error("MQTT: broker refused message %d: %s", mid, reason)
            return
        self._acks.append((client, mid, time.monotonic()))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain))
        try:
            self._commands.put_nowait(received)
        except queue.Full:
            # Never silently: the command thread answers these "busy" (cheaply) after the queue.
            if len(self._overflow) < OVERFLOW_MAX:
                self._overflow.append(Received(received.topic, received.payload, received.retained, True))
            else:
                log.error("MQTT: command flood, dropped a message on %s", message.topic)

    # -- command thread ---------------------------------------------------------------------------

    def _run_commands(self) -> None:
        while True:
            try:
                item = self._commands.get(timeout=0.5)
            except queue.Empty:
                item = None if self.stop_event.is_set() else Received("", b"")
            if item is None:
                return
            if item.topic:
                self._dispatch(item)
            while self._overflow:
                self._dispatch(self._overflow.popleft())

    def _dispatch(self, received: Received) -> None:
        with self._state_lock:
            handlers = [
                h
                for f, (_, h) in self._subscriptions.items()
                if mqtt.topic_matches_sub(match_filter(f), received.topic)
            ]
        for handler in handlers:
            try:
                handler(received)
            except Exception:  # a command must never take the appliance down
                log.exception("MQTT: handling a message on %s failed", received.topic)
