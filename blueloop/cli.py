"""`python -m blueloop`: the blue-loop server (DESIGN.md "Blue-loop job (contract)")."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

log = logging.getLogger("blueloop")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, as the edge's errors are
        print(f"blueloop: error: {message} (see python -m blueloop --help)", file=sys.stderr)
        raise SystemExit(2)


class SetupError(Exception):
    pass


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m blueloop",
        description="Reflex Edge blue-loop server: takes delegated jobs "
        "from MQTT ($share/blueloop/...), answers on {prefix}/{device}/blue/result",
    )
    p.add_argument("--mqtt", required=True, metavar="URL", help="mqtt[s]://[user:pass@]host:port")
    p.add_argument("--prefix", default="reflex", help="topic prefix of the appliances (default reflex)")
    p.add_argument("--reasoner", choices=("local", "openai"), default="local")
    p.add_argument("--base-url", help="openai: the chat-completions server, e.g. http://gpu-box:8000/v1")
    p.add_argument("--model", help="openai: the model name the server knows")
    p.add_argument("--api-key-file", metavar="FILE", help="openai: file holding the API key (Bearer)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="openai: per-request timeout")
    p.add_argument("--retries", type=int, default=3, help="openai: retries on 5xx, 429 and timeouts")
    p.add_argument("--model-file", metavar="FILE", help="local: detector model (default: models/cache/)")
    p.add_argument("--reports", default="blueloop-reports", metavar="DIR", help="local: where reports go")
    p.add_argument("--concurrency", type=_positive, default=2, metavar="N", help="jobs at once (default 2)")
    p.add_argument("--health", type=_hostport, metavar="HOST:PORT", help="serve GET /health here")
    p.add_argument("--client-id", help="MQTT client id, fixed per worker (default blueloop-HOSTNAME)")
    p.add_argument(
        "--session-expiry",
        type=int,
        default=3600,
        metavar="S",
        help="how long the broker keeps this worker's unfinished jobs while it is away",
    )
    p.add_argument("--username")
    p.add_argument("--password-file", metavar="FILE")
    p.add_argument("--ca-file", metavar="FILE")
    p.add_argument("--cert-file", metavar="FILE")
    p.add_argument("--key-file", metavar="FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--slow-ms", type=int, default=0, help=argparse.SUPPRESS)  # tests: a slow reasoner
    return p


def _mqtt_config(args: argparse.Namespace):
    from edge.config.models import MqttConfig

    try:
        return MqttConfig(
            url=args.mqtt,
            prefix=args.prefix,
            username=args.username,
            password_file=args.password_file,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            client_id=args.client_id,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SetupError(f"--{'-'.join(map(str, err['loc']))}: {err['msg']}") from None


def _reasoner(args: argparse.Namespace):
    if args.reasoner == "openai":
        from blueloop.reasoners.openai import OpenAIReasoner

        return OpenAIReasoner(args.base_url, args.model, args.api_key_file, args.timeout, args.retries)
    from blueloop.reasoners.local import LocalReasoner

    if args.model_file and not Path(args.model_file).is_file():
        raise SetupError(f"--model-file {args.model_file}: no such file")
    reasoner = LocalReasoner(args.model_file, Path(args.reports), args.slow_ms)
    reasoner.warm()
    return reasoner


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from blueloop.health import HealthServer
    from blueloop.reasoners import ReasonerError
    from blueloop.worker import Worker
    from edge.bus.mqtt import BusConfigError, parse_endpoint
    from edge.reflex import BackendError, ModelError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    health = None
    try:
        cfg = _mqtt_config(args)
        parse_endpoint(cfg)  # a bad URL or password file is reported before the models load
        worker = Worker(
            cfg,
            _reasoner(args),
            args.concurrency,
            args.client_id or f"blueloop-{socket.gethostname()}",
            args.session_expiry,
        )
        if args.health:
            try:
                health = HealthServer(*args.health, worker.stats.snapshot)
            except OSError as exc:
                raise SetupError(
                    f"--health {args.health[0]}:{args.health[1]}: {exc.strerror or exc}"
                ) from None
            health.start()
        worker.start()
    except (SetupError, ReasonerError, BusConfigError, ModelError, BackendError) as exc:
        print(f"blueloop: error: {exc}", file=sys.stderr)
        return 2
    stop.wait()
    log.info("stopping: finishing running jobs")
    worker.stop()
    if health is not None:
        health.stop()
    return 0
