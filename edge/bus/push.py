"""Push channels: alerts to a webhook or an ntfy topic, drained from the outbox with retries.

`EventLog.alert(..., push=names)` queues one outbox row per push channel a rule names (channel
`push:NAME`) in the same commit as the alert. One `PushWorker` thread per channel sends its rows in id
order; a row is marked delivered only when the receiver answered 2xx. A failure is counted
(`mark_attempt`) and the SAME row is retried with jittered exponential back-off: nothing is skipped or
reordered, and a dead receiver never holds up MQTT or another channel. Consumers de-duplicate by the
alert `id` (a crash between the receiver's 2xx and our commit resends that one message once).

Only the standard library (urllib) is used. Redirects are not followed (a redirected POST would turn
into a GET and "succeed" without delivering). URLs, secrets and tokens are never logged: an ntfy
topic is as good as a password, webhook URLs often carry tokens, so logs name the channel and host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from edge.backoff import Backoff
from edge.config.models import EdgeConfig, NtfyConfig, PushChannelConfig, WebhookConfig
from edge.store import EventLog, OutboxMessage, StoreError
from edge.store.models import push_channel

log = logging.getLogger("edge.push")

USER_AGENT = "reflex-edge"
POLL_S = 0.5
"""How often an idle worker looks for new outbox rows (`notify()` wakes it at once)."""
SNAPSHOT_WAIT_S = 2.0
"""How long after the alert an ntfy message waits for its snapshot JPEG before going without."""
BATCH = 50
MESSAGE_MAX = 1000
"""Characters of alert text put in an ntfy Message header (a header, not a document)."""
SEVERITY_TAG = {"info": "information_source", "warning": "warning", "critical": "rotating_light"}
"""ntfy tags that render as emoji in the app."""


class PushError(Exception):
    """A send that failed; str() is one line without URL, secret or token. `status` is the HTTP
    status when the receiver answered."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(_one_line(reason))
        self.status = status


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect)


def _request(method: str, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """One HTTP request; returns the 2xx status or raises PushError."""
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            resp.read(65536)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(300).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            detail = ""
        hint = " (redirects are not followed: set url to the final address)" if 300 <= exc.code < 400 else ""
        reason = f"HTTP {exc.code} {exc.reason}{hint}" + (f": {detail}" if detail.strip() else "")
        raise PushError(reason, exc.code) from None
    except urllib.error.URLError as exc:
        why = exc.reason
        if isinstance(why, TimeoutError):
            raise PushError(f"no answer within {timeout:g} s") from None
        raise PushError(f"cannot connect: {why.strerror if isinstance(why, OSError) else why}") from None
    except TimeoutError:
        raise PushError(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise PushError(f"{type(exc).__name__}: {exc}") from None


def _where(url: str) -> str:
    """scheme://host[:port] of a URL, safe to log (no path: it may be a secret topic or token)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def rfc2047(value: str) -> str:
    """A header value as is when it is plain printable ASCII, else one RFC 2047 encoded word
    (`=?UTF-8?B?...?=`), which ntfy decodes for every parameter header."""
    if value.isascii() and value.isprintable() and "=?" not in value:
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def _alert_fields(message: OutboxMessage) -> dict[str, Any]:
    """The alert payload as a dict; a payload that is not a JSON object still gets sent as text."""
    try:
        data = json.loads(message.payload)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"text": message.payload}


class PushChannel:
    """One configured destination. `send` raises PushError on any failure (it is then retried)."""

    kind = "push"
    wants_snapshot = False
    """True: the worker waits briefly for the alert's snapshot JPEG and passes it to `send`."""
    confirmed_only = False
    """True: only confirmed alerts are sent; a provisional or retracted row is dropped unsent (the
    journal queues none for such a channel; this catches rows queued before the setting changed)."""

    def __init__(self, name: str, url: str, timeout_s: float) -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return f"{self.kind} to {_where(self.url)}"

    def send(self, message: OutboxMessage, snapshot: bytes | None) -> None:
        raise NotImplementedError


class WebhookChannel(PushChannel):
    """POST of the alert JSON exactly as queued, optionally signed with HMAC-SHA256."""

    kind = "webhook"

    def __init__(self, name: str, cfg: WebhookConfig) -> None:
        super().__init__(name, cfg.url, cfg.timeout_s)
        self._secret = cfg.secret.get_secret_value().encode("utf-8") if cfg.secret else None
        self._headers = dict(cfg.headers)

    def sign(self, body: bytes) -> str | None:
        """`sha256=<hex HMAC-SHA256 of body with the secret>`, or None without a secret."""
        if self._secret is None:
            return None
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def send(self, message: OutboxMessage, snapshot: bytes | None) -> None:
        body = message.payload.encode("utf-8")
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Reflex-Timestamp": str(int(time.time())),
        }
        signature = self.sign(body)
        if signature is not None:
            headers["X-Reflex-Signature"] = signature
        _request("POST", self.url, body, headers, self.timeout_s)


class NtfyChannel(PushChannel):
    """An ntfy topic: Title/Priority/Tags headers; the snapshot, when there is one, is the body
    (an attachment, `Filename: snapshot.jpg`) and the text goes in the Message header."""

    kind = "ntfy"

    def __init__(self, name: str, cfg: NtfyConfig) -> None:
        super().__init__(name, cfg.url, cfg.timeout_s)
        self.wants_snapshot = cfg.attach_snapshot
        self.priority = cfg.priority
        self._auth: str | None = None
        if cfg.token is not None:
            self._auth = "Bearer " + cfg.token.get_secret_value()
        elif cfg.username is not None and cfg.password is not None:
            pair = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode("ascii")

    def notification(self, message: OutboxMessage) -> tuple[dict[str, str], str]:
        """(headers without the body-specific ones, message text) for one alert."""
        data = _alert_fields(message)
        label = str(data.get("label") or "alert")
        camera = str(data.get("camera") or "?")
        severity = str(data.get("severity") or "warning")
        title = f"Reflex: {label} on {camera}"
        text = str(data.get("text") or title)
        priority = getattr(self.priority, severity, self.priority.warning)
        tags = [SEVERITY_TAG.get(severity, "warning"), label, camera]
        if data.get("phase") == "retracted":
            title, priority, tags[0] = f"{title} (retracted)", 2, "white_check_mark"
        headers = {
            "Title": rfc2047(title),
            "Priority": str(priority),
            "Tags": rfc2047(",".join(t.replace(",", " ") for t in tags)),
            "User-Agent": USER_AGENT,
        }
        if self._auth is not None:
            headers["Authorization"] = self._auth
        if len(text) > MESSAGE_MAX:
            text = text[: MESSAGE_MAX - 3] + "..."
        return headers, text

    def send(self, message: OutboxMessage, snapshot: bytes | None) -> None:
        headers, text = self.notification(message)
        if snapshot is not None:
            attached = {
                **headers,
                "Filename": "snapshot.jpg",
                "Message": rfc2047(text),
                "Content-Type": "image/jpeg",
            }
            try:
                _request("PUT", self.url, snapshot, attached, self.timeout_s)
                return
            except PushError as exc:
                if exc.status not in (400, 413):  # 400: attachments disabled; 413: too large
                    raise
                log.warning(
                    "push %s: server refused the snapshot (%s); sending the text alone", self.name, exc
                )
        headers["Content-Type"] = "text/plain; charset=utf-8"
        _request("POST", self.url, text.encode("utf-8"), headers, self.timeout_s)


def make_channel(name: str, cfg: PushChannelConfig) -> PushChannel:
    channel: PushChannel
    channel = WebhookChannel(name, cfg) if isinstance(cfg, WebhookConfig) else NtfyChannel(name, cfg)
    channel.confirmed_only = cfg.confirmed_only
    return channel


class PushWorker(threading.Thread):
    """Drains one push channel's outbox rows in order until `stop` is set."""

    def __init__(
        self,
        name: str,
        channel: PushChannel,
        events: EventLog,
        stop: threading.Event,
        *,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        snapshot_wait_s: float = SNAPSHOT_WAIT_S,
        poll_s: float = POLL_S,
    ) -> None:
        super().__init__(name=f"push-{name}", daemon=True)
        self.channel_name = name
        self.channel = channel
        self.outbox_channel = push_channel(name)
        self.events = events
        self.stop = stop
        self.retry_min_s = retry_min_s
        self.retry_max_s = max(retry_max_s, retry_min_s)
        self._backoff = Backoff(self.retry_min_s, self.retry_max_s)
        self.snapshot_wait_s = snapshot_wait_s
        self.poll_s = poll_s
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self._wake = threading.Event()

    def notify(self) -> None:
        """New rows were queued: look now instead of at the next poll."""
        self._wake.set()

    def run(self) -> None:
        log.info("push %s: started (%s)", self.channel_name, self.channel.describe())
        while not self.stop.is_set():
            try:
                self._drain()
            except Exception:  # a bug must not silently end push delivery
                log.exception("push %s: unexpected error; carrying on", self.channel_name)
                self.stop.wait(self.retry_max_s)
        log.info("push %s: stopped", self.channel_name)

    def _drain(self) -> None:
        try:
            batch = self.events.outbox_pending(BATCH, channel=self.outbox_channel)
        except StoreError as exc:
            log.error("push %s: %s", self.channel_name, exc)
            self.stop.wait(self.retry_max_s)
            return
        if not batch:
            self._idle()
            return
        for message in batch:
            unconfirmed = _alert_fields(message).get("phase", "confirmed") != "confirmed"
            if self.channel.confirmed_only and unconfirmed:
                if not self._drop_unconfirmed(message):
                    return
                continue
            if not self._deliver(message):
                return

    def _drop_unconfirmed(self, message: OutboxMessage) -> bool:
        phase = _alert_fields(message).get("phase")
        try:
            self.events.drop_message(message.id, f"confirmed_only channel: the alert is {phase}")
        except StoreError as exc:
            log.error("push %s: %s", self.channel_name, exc)
            self.stop.wait(self.retry_max_s)
            return False
        log.info("push %s: alert %s not sent (%s; the channel is confirmed_only)", self.channel_name,
                 message.message_id, phase)  # fmt: skip
        return True

    def _idle(self) -> None:
        """Until new rows are announced (`notify`, also sent on stop) or the next poll."""
        if self._wake.wait(self.poll_s):
            self._wake.clear()

    def backoff(self, failures: int) -> float:
        """Delay before retry number `failures` (1, 2, ...): doubling, jittered +-20%, kept within
        retry_min_s..retry_max_s."""
        return self._backoff.delay(failures)

    def _deliver(self, message: OutboxMessage) -> bool:
        """Send one message until it is delivered; False when stopped first."""
        failures = 0
        while not self.stop.is_set():
            snapshot = self._snapshot(message) if self.channel.wants_snapshot else None
            if self.stop.is_set():
                return False
            try:
                self.channel.send(message, snapshot)
            except Exception as exc:
                failures += 1
                self.failures += 1
                reason = str(exc) if isinstance(exc, PushError) else _one_line(f"{type(exc).__name__}: {exc}")
                self.last_error = reason
                delay = self.backoff(failures)
                log.warning(
                    "push %s: alert %s not delivered (attempt %d): %s; retrying in %.1f s",
                    self.channel_name,
                    message.message_id,
                    message.attempts + failures,
                    reason,
                    delay,
                )
                try:
                    self.events.mark_attempt(message.id)
                except StoreError as store_exc:
                    log.error("push %s: %s", self.channel_name, store_exc)
                if self.stop.wait(delay):
                    return False
                continue
            self.last_error = None
            log.info(
                "push %s: alert %s delivered%s%s",
                self.channel_name,
                message.message_id,
                " with snapshot" if snapshot is not None else "",
                f" after {failures} failed attempts" if failures else "",
            )
            return self._mark_delivered(message)
        return False

    def _mark_delivered(self, message: OutboxMessage) -> bool:
        while True:
            try:
                self.events.mark_delivered([message.id])
            except StoreError as exc:
                log.error("push %s: alert %s sent, but %s", self.channel_name, message.message_id, exc)
                if self.stop.wait(self.poll_s):
                    return False  # resent after a restart; consumers de-duplicate by id
                continue
            self.delivered += 1
            return True

    def _snapshot(self, message: OutboxMessage) -> bytes | None:
        """The alert's snapshot JPEG, waiting until `snapshot_wait_s` after the alert was queued
        (the snapshot is written just after the alert); None when there is none by then."""
        event_id = _alert_fields(message).get("event_id")
        if not isinstance(event_id, str):
            return None
        deadline = message.created_at + self.snapshot_wait_s
        while True:
            try:
                rows = self.events.alerts(event_id=event_id)
            except StoreError as exc:
                log.error("push %s: %s", self.channel_name, exc)
                return None
            rel = next((r["snapshot"] for r in rows if r["id"] == message.message_id), None)
            if rel:
                try:
                    return (self.events.snapshot_dir / rel).read_bytes()
                except OSError as exc:
                    log.warning(
                        "push %s: snapshot of alert %s unreadable: %s",
                        self.channel_name,
                        message.message_id,
                        exc,
                    )
                    return None
            left = deadline - time.time()
            if left <= 0 or self.stop.wait(min(left, 0.05)):
                return None


def start_push_workers(
    events: EventLog,
    cfg: EdgeConfig,
    stop: threading.Event,
    *,
    snapshot_wait_s: float = SNAPSHOT_WAIT_S,
    poll_s: float = POLL_S,
) -> list[PushWorker]:
    """Start one worker thread per configured push channel; they end when `stop` is set."""
    named = {name for rule in cfg.rules for name in rule.push}
    workers = []
    for name, channel_cfg in cfg.push.items():
        if name not in named:
            log.warning("push %s: no rule names this channel (add `push: [%s]` to a rule)", name, name)
        worker = PushWorker(
            name,
            make_channel(name, channel_cfg),
            events,
            stop,
            retry_min_s=channel_cfg.retry_min_s,
            retry_max_s=channel_cfg.retry_max_s,
            snapshot_wait_s=snapshot_wait_s,
            poll_s=poll_s,
        )
        worker.start()
        workers.append(worker)
    return workers
