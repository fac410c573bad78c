"""The bus against brokers set up the way installers set them up: TLS with a private CA, user names
and passwords, a wrong password, and an old broker that only speaks MQTT 3.1.1."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.bus.mqtt import Bus, BusConfigError, parse_endpoint
from edge.config.models import MqttConfig
from edge.outbox import Topics, alert_payload
from edge.store import EventLog
from edge.types import AlertRecord, EventRecord
from tests.support import Mosquitto, OldBroker, Subscriber, wait_until

DEV = "sec"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA and a broker certificate for localhost/127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Reflex Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    return d


@pytest.fixture
def secure_broker(tmp_path: Path, certs: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "lobby", "s3cret pass"], check=True)
    broker = Mosquitto(
        tmp_path,
        anonymous=False,
        listener=(
            f"cafile {certs / 'ca.pem'}\ncertfile {certs / 'server.pem'}\nkeyfile {certs / 'server.key'}\n"
            f"password_file {passwd}\n"
        ),
    )
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[EventLog]:
    """An event log with three alerts waiting for a broker."""
    log = EventLog(tmp_path / "data")
    log.ensure_camera("door", "rtsp://cam")
    log.event_started(EventRecord(id="e1", camera="door", label="person", rule="r", score=0.9,
                                  box=(1, 2, 3, 4), started_at=time.time(), frame=0, pts=0.0))  # fmt: skip
    for i in range(3):
        alert = AlertRecord(id=f"a{i}", event_id="e1", rule="r", camera="door", label="person",
                            severity="warning", text="person", at=time.time(), frame=i, pts=i)  # fmt: skip
        log.alert(alert, alert_payload(alert), f"reflex/{DEV}/alerts")
    yield log
    log.close()


def tls_subscriber(broker: Mosquitto, certs: Path) -> Subscriber:
    return Subscriber(broker.port, [f"reflex/{DEV}/#"], tls=(certs / "ca.pem", "lobby", "s3cret pass"))


def test_tls_with_a_private_ca_and_a_password_delivers(secure_broker: Mosquitto, certs: Path,
                                                       outbox: EventLog) -> None:  # fmt: skip
    sub = tls_subscriber(secure_broker, certs)
    cfg = MqttConfig(url=f"mqtts://localhost:{secure_broker.port}", username="lobby",
                     password="s3cret pass", ca_file=str(certs / "ca.pem"))  # fmt: skip
    bus = Bus(cfg, Topics("reflex", DEV), outbox)
    bus.start()
    try:
        assert wait_until(lambda: outbox.outbox_depth() == 0, 15), bus.last_error
        assert wait_until(lambda: len(sub.on(f"reflex/{DEV}/alerts")) == 3, 5)
        assert [a["id"] for a in sub.json_on(f"reflex/{DEV}/alerts")] == ["a0", "a1", "a2"]
        assert sub.last(f"reflex/{DEV}/availability") == b"online"
    finally:
        bus.stop()
        sub.close()


def test_password_in_the_url_and_from_a_file(tmp_path: Path, secure_broker: Mosquitto, certs: Path,
                                             outbox: EventLog) -> None:  # fmt: skip
    (tmp_path / "pw").write_text("s3cret pass\n")
    cfg = MqttConfig(url=f"mqtts://lobby@127.0.0.1:{secure_broker.port}", password_file=str(tmp_path / "pw"),
                     ca_file=str(certs / "ca.pem"))  # fmt: skip
    bus = Bus(cfg, Topics("reflex", DEV), outbox)
    bus.start()
    try:
        assert wait_until(lambda: outbox.outbox_depth() == 0, 15), bus.last_error
    finally:
        bus.stop()


def test_wrong_password_or_untrusted_broker_keeps_alerts_and_says_why(
    secure_broker: Mosquitto, certs: Path, outbox: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = MqttConfig(url=f"mqtts://localhost:{secure_broker.port}", username="lobby", password="guess",
                       ca_file=str(certs / "ca.pem"), reconnect_min_s=0.2, reconnect_max_s=0.5)  # fmt: skip
    untrusted = MqttConfig(url=f"mqtts://localhost:{secure_broker.port}", username="lobby",
                           password="s3cret pass", reconnect_min_s=0.2, reconnect_max_s=0.5)  # fmt: skip
    for cfg, says in ((wrong, "refused"), (untrusted, "certificate verify failed")):
        bus = Bus(cfg, Topics("reflex", DEV), outbox)
        with caplog.at_level(logging.WARNING, logger="edge.bus"):
            bus.start()
            try:
                assert wait_until(lambda: says in bus.last_error, 10), bus.last_error  # noqa: B023
                time.sleep(1.0)
                assert outbox.outbox_depth() == 3, "nothing is marked delivered without a broker's ack"
                assert not bus.connected.is_set()
            finally:
                bus.stop()
        assert "s3cret" not in caplog.text and "guess" not in caplog.text
        assert says in caplog.text


def test_falls_back_to_mqtt_311_for_an_old_broker(mosquitto: Mosquitto, outbox: EventLog) -> None:
    old = OldBroker(mosquitto.port)
    sub = Subscriber(mosquitto.port, [f"reflex/{DEV}/alerts"])
    bus = Bus(
        MqttConfig(url=f"mqtt://127.0.0.1:{old.port}", reconnect_min_s=0.1), Topics("reflex", DEV), outbox
    )
    bus.start()
    try:
        assert wait_until(lambda: outbox.outbox_depth() == 0, 15), bus.last_error
        assert old.refused_v5 == 1, "MQTT 5 is tried first, once"
        assert wait_until(lambda: len(sub.on(f"reflex/{DEV}/alerts")) == 3, 5)
    finally:
        bus.stop()
        sub.close()
        old.close()


@pytest.mark.parametrize(
    ("cfg", "says"),
    [
        (MqttConfig(url="http://broker:1883"), "expected mqtt[s]://"),
        (MqttConfig(url="mqtt://broker:99999"), "bad port"),
        (MqttConfig(url="mqtt://u:hunter2@broker:1883x"), "bad port"),
        (MqttConfig(url="mqtt://broker", password_file="/nonexistent/pw"), "cannot read MQTT password_file"),
    ],
)
def test_bad_settings_are_one_line_errors_without_secrets(cfg: MqttConfig, says: str) -> None:
    with pytest.raises(BusConfigError) as err:
        parse_endpoint(cfg)
    assert says in str(err.value) and "\n" not in str(err.value) and "hunter2" not in str(err.value)


def test_endpoint_defaults() -> None:
    assert str(parse_endpoint(MqttConfig(url="mqtts://broker.lan"))) == "mqtts://broker.lan:8883"
    plain = parse_endpoint(MqttConfig(url="mqtt://user:p%40ss@broker.lan"))
    assert (plain.port, plain.username, plain.password, plain.tls) == (1883, "user", "p@ss", False)
