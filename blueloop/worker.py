"""The blue-loop worker: takes jobs from MQTT, runs them on a bounded pool, publishes the results.

- **Shared subscription.** `$share/blueloop/{prefix}/+/blue/request` at QoS 1: the broker hands each
  job to one worker of the group, so N workers on N machines (or N broker cluster nodes) share the
  load with no code change.
- **A job is acknowledged only when its result is out.** paho's manual ack: the PUBACK for a request
  goes to the broker only after the result's own PUBACK came back. The session is persistent (MQTT 5
  clean_start False, a fixed client id, a session expiry), so a worker killed mid-job gets its
  unacknowledged jobs again from the broker when it (or its systemd restart) reconnects: killing a
  worker loses no job. A redelivered job already running here is not started twice, and a result
  published but not yet acknowledged is sent again from a small cache.
- **Bounded.** The CONNECT's Receive Maximum is the concurrency: the broker sends no more unacked jobs
  than there are pool threads, and the rest wait in the broker (not in our memory).
- **Deadlines.** A job past its `deadline` gets `status: timeout` at that moment, whatever the
  reasoner is doing (reasoners also check the deadline between steps and give up).
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from blueloop.jobs import KINDS, Job, JobError, Result, identify, parse_job, unknown_kind
from blueloop.reasoners import Reasoner
from edge.bus.mqtt import new_client, parse_endpoint, tls_context
from edge.config.models import MqttConfig
from edge.outbox import Topics
from edge.outbox.topics import blue_request_filter, device_of_request
from edge.redact import redact

log = logging.getLogger("blueloop.worker")

RESULT_CACHE = 256
"""Results kept for re-sending when a job comes again (its ack was lost with the connection)."""
PUBLISH_WAIT_S = 30.0


@dataclass
class _Running:
    job_id: str
    device: str
    kind: str
    started: float
    acks: list[tuple[int, int, int]] = field(default_factory=list)  # (mid, qos, connection generation)
    finished: bool = False


@dataclass
class Stats:
    connected: bool = False
    jobs_running: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_timeout: int = 0
    jobs_dropped: int = 0

    def snapshot(self) -> dict:
        return {
            "ok": self.connected,
            "connected": self.connected,
            "jobs_running": self.jobs_running,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "jobs_timeout": self.jobs_timeout,
            "jobs_dropped": self.jobs_dropped,
        }


class Worker:
    def __init__(
        self,
        cfg: MqttConfig,
        reasoner: Reasoner,
        concurrency: int,
        client_id: str,
        session_expiry_s: int = 3600,
    ) -> None:
        self.cfg = cfg
        self.reasoner = reasoner
        self.concurrency = concurrency
        self.client_id = client_id
        self.session_expiry_s = session_expiry_s
        self.endpoint = parse_endpoint(cfg)
        context = tls_context(cfg) if self.endpoint.tls else None
        self.client = new_client(
            cfg, self.endpoint, MQTTProtocolVersion.MQTTv5, client_id, context, reconnect=True
        )
        self.client.manual_ack_set(True)
        self.client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.filter = blue_request_filter(cfg.prefix)
        self.stats = Stats()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="blueloop-job")
        self._lock = threading.Lock()
        self._generation = 0
        self._running: dict[str, _Running] = {}
        self._results: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._deadlines: list[tuple[float, str]] = []
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._queued = 0

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.concurrency
        log.info(
            "connecting to %s as %s (%s, concurrency %d)",
            redact(self.cfg.url or ""),
            self.client_id,
            self.reasoner.name,
            self.concurrency,
        )
        self.client.connect_async(
            self.endpoint.host, self.endpoint.port, self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()
        threading.Thread(target=self._watch_deadlines, name="blueloop-deadlines", daemon=True).start()

    def stop(self, drain_s: float = 10.0) -> None:
        """Stop taking jobs, let the running ones finish (their results go out) for up to drain_s,
        then disconnect. Jobs not finished by then stay with the broker for the next start."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self.stats.connected:
            self.client.unsubscribe(self.filter)
        end = time.monotonic() + drain_s
        while time.monotonic() < end and (self._queued or self.stats.jobs_running):
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- paho callbacks (network thread: nothing slow here) ------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: object = None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        self.stats.connected = True
        log.info("connected to %s; taking jobs from %s", self.endpoint, self.filter)
        if not self._stopping:
            client.subscribe(self.filter, qos=1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: object = None,
    ) -> None:
        if self.stats.connected:
            log.warning("disconnected from the broker (%s); reconnecting", reason)
        self.stats.connected = False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
            self._queued += 1
        self._pool.submit(self._handle, msg.topic, bytes(msg.payload), msg.mid, msg.qos, generation)

    # -- jobs ------------------------------------------------------------------------------------

    def _handle(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        with self._lock:
            self._queued -= 1
        ack = (mid, qos, generation)
        try:
            self._take(topic, payload, ack)
        except Exception:  # a bug must not kill the pool thread or leave the job unanswered forever
            log.exception("job on %s: unexpected error", topic)

    def _take(self, topic: str, payload: bytes, ack: tuple[int, int, int]) -> None:
        started = time.monotonic()
        job_id, device, doc = identify(payload, device_of_request(self.cfg.prefix, topic))
        if job_id is None or device is None:
            why = "not JSON" if doc is None else "no job_id" if device else "no device"
            log.warning(
                "dropped a malformed job on %s (%s, %d bytes): no result can be sent",
                topic,
                why,
                len(payload),
            )
            self.stats.jobs_dropped += 1
            self._ack([ack])
            return
        with self._lock:
            cached = self._results.get(job_id)
            running = self._running.get(job_id)
            if running is not None and not running.finished:
                running.acks.append(ack)  # redelivered while it runs: answered once, both acked
                return
        if cached is not None:
            log.info("job %s: delivered again; re-sending its result", job_id)
            if self._publish(*cached):
                self._ack([ack])
            return
        entry = _Running(job_id, device, str(doc.get("kind", "?")), started, [ack])
        with self._lock:
            self._running[job_id] = entry
            self.stats.jobs_running += 1
        try:
            job = parse_job(doc, device)
        except JobError as exc:
            self._finish(entry, Result("failed", str(exc)))
            return
        if job.kind not in KINDS:
            self._finish(entry, unknown_kind(job.kind))
            return
        if job.expired():
            late = time.time() - job.deadline
            self._finish(entry, Result("timeout", f"the job arrived {late:.1f} s after its deadline"))
            return
        with self._lock:
            heapq.heappush(self._deadlines, (job.deadline, job_id))
            self._wake.notify_all()
        result = self._reason(job)
        self._finish(entry, result)

    def _reason(self, job: Job) -> Result:
        try:
            return self.reasoner.reason(job)
        except Exception as exc:
            log.exception("job %s: the %s reasoner failed", job.job_id, self.reasoner.name)
            return Result("failed", f"the {self.reasoner.name} reasoner failed: {type(exc).__name__}: {exc}")

    def _finish(self, entry: _Running, result: Result) -> None:
        """Publish the job's first outcome (done/failed, or timeout from the deadline watch), then ack."""
        elapsed_ms = (time.monotonic() - entry.started) * 1000
        topic = Topics(self.cfg.prefix, entry.device).blue_result
        body = json.dumps(result.payload(entry.job_id, elapsed_ms), separators=(",", ":")).encode()
        with self._lock:
            if entry.finished:
                return
            entry.finished = True
            self._results[entry.job_id] = (topic, body)
            while len(self._results) > RESULT_CACHE:
                self._results.popitem(last=False)
        published = self._publish(topic, body)
        with self._lock:
            acks, entry.acks = entry.acks, []
            self._running.pop(entry.job_id, None)
            self.stats.jobs_running -= 1
            if result.status == "done":
                self.stats.jobs_done += 1
            elif result.status == "timeout":
                self.stats.jobs_timeout += 1
            else:
                self.stats.jobs_failed += 1
        if published:
            self._ack(acks)
        line = result.text.replace("\n", " / ")
        log.info(
            "job %s %s/%s %s in %.0f ms: %s%s",
            entry.job_id,
            entry.device,
            entry.kind,
            result.status,
            elapsed_ms,
            line[:160],
            "" if published else " (result not yet acknowledged by the broker)",
        )

    def _publish(self, topic: str, body: bytes) -> bool:
        try:
            info = self.client.publish(topic, body, qos=1, retain=False)
            info.wait_for_publish(PUBLISH_WAIT_S)
            return info.is_published()
        except (RuntimeError, ValueError) as exc:
            log.warning("result on %s not published: %s", topic, exc)
            return False

    def _ack(self, acks: list[tuple[int, int, int]]) -> None:
        with self._lock:
            generation = self._generation
        for mid, qos, gen in acks:
            # A mid belongs to its connection: after a reconnect the broker re-sends the job instead.
            if qos > 0 and gen == generation:
                self.client.ack(mid, qos)

    def _watch_deadlines(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._deadlines:
                    self._wake.wait(1.0)
                    continue
                deadline, job_id = self._deadlines[0]
                wait = deadline - time.time()
                if wait > 0:
                    self._wake.wait(min(wait, 1.0))
                    continue
                heapq.heappop(self._deadlines)
                entry = self._running.get(job_id)
                if entry is None or entry.finished:
                    continue
                self._lock.release()
                try:
                    self._finish(entry, Result("timeout", f"the {entry.kind} job passed its deadline"))
                finally:
                    self._lock.acquire()
