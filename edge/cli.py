"""The `edge` command: run, scan, events (DESIGN.md's CLI contract)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from edge.capture import SourceError
from edge.config import CameraConfig, ConfigError, EdgeConfig, load_config
from edge.reflex import BackendError, ModelError
from edge.store import EventLog, StoreError
from edge.timefmt import clock

log = logging.getLogger("edge")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see config/example.yaml)")
    p.add_argument("--watch", type=_csv, help="labels to watch, e.g. fire,person")
    p.add_argument("--model", help="model file (default: the manifest's file under models/cache/)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Reflex Edge security appliance")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the appliance")
    _common(run)
    run.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE", help="add a camera")
    run.add_argument("--loop", action="store_true", help="replay file sources forever")
    run.add_argument("--mqtt", metavar="URL", help="mqtt[s]://[user:pass@]host:port")
    run.add_argument("--device", help="device id (MQTT topics)")
    run.add_argument("--data", help="folder for the database and snapshots")
    run.add_argument("--admin", metavar="HOST:PORT", help="serve the admin web page here (e.g. 0.0.0.0:8080)")

    scan = sub.add_parser("scan", help="run the red loop over a file or stream, print JSON Lines")
    _common(scan)
    scan.add_argument("source", help="video file, image, image folder or stream URL")
    scan.add_argument("--rules", help="YAML file with a `rules:` list")
    scan.add_argument("--realtime", action="store_true", help="pace a file like a live camera")
    scan.add_argument("--data", help="keep the event log here (default: a temporary one)")
    scan.add_argument("--camera", help="camera name in the output (default: from the source)")

    ask = sub.add_parser("ask", help="send an instruction to a running appliance, print the answers")
    ask.add_argument("text", help='e.g. "How many people are in the lobby?"')
    ask.add_argument("--camera", help="the camera the question is about")
    ask.add_argument("--config", help="YAML config file (its mqtt: and device: settings are used)")
    ask.add_argument("--mqtt", metavar="URL", help="mqtt[s]://[user:pass@]host:port")
    ask.add_argument("--device", help="device id of the appliance")
    ask.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    ask.add_argument("--json", action="store_true", help="print each answer as JSON")

    explain = sub.add_parser("explain", help="print what the instruction router would do with TEXT (JSON)")
    explain.add_argument("text", help='e.g. "Alert me immediately if a fire breaks out"')
    explain.add_argument("--camera", help="the camera the instruction is about")
    explain.add_argument("--config", help="YAML config file (its cameras, zones and rules are known)")

    doctor = sub.add_parser("doctor", help="check this device: backend, cameras, broker, disk, clock")
    doctor.add_argument("--config", help="YAML config file (the one the appliance runs with)")
    doctor.add_argument("--json", action="store_true", help="one JSON object instead of lines (for scripts)")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per camera and broker")
    doctor.add_argument("--skip", type=_csv, default=[], metavar="CHECKS",
                        help="leave out checks: models,backend,engine,cameras,broker,disk,clock")  # fmt: skip

    events = _log_reader(sub, "events", "list the event log")
    events.add_argument("--camera")
    events.add_argument("--label")
    alerts = _log_reader(sub, "alerts", "list alerts and their delivery (MQTT, push channels)")
    alerts.add_argument("--camera")
    _log_reader(sub, "asks", "list the instructions, their answers and blue-loop jobs")
    return parser


def _log_reader(sub: argparse._SubParsersAction, name: str, what: str) -> argparse.ArgumentParser:
    """A command that reads the event log (`_open_log`): where it is, how many rows, JSON or a table."""
    p = sub.add_parser(name, help=what)
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--data", help="data folder (default: the config's data_dir)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    return p


def _apply_common(cfg: EdgeConfig, args: argparse.Namespace) -> EdgeConfig:
    updates: dict[str, object] = {}
    if args.watch is not None:
        updates["watch"] = args.watch
    if args.model:
        updates["model"] = cfg.model.model_copy(update={"path": str(Path(args.model).resolve())})
    return cfg.model_copy(update=updates) if updates else cfg


def _apply_run_flags(cfg: EdgeConfig, args: argparse.Namespace) -> EdgeConfig:
    """The config with the flags applied, validated as a whole (a rule naming a camera only a flag
    adds). Only the sections a flag changed are replaced: the others keep their file lines, so that a
    config rule still says where it is (the admin page shows it read-only with FILE:LINE)."""
    cameras = dict(cfg.cameras)
    for spec in args.camera:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            raise ConfigError(f"--camera {spec!r}: expected NAME=SOURCE")
        cameras[name] = CameraConfig(source=source, loop=args.loop)
    data: dict[str, object] = cfg.model_dump()
    changed = {"cameras"} if args.camera else set()
    data["cameras"] = {n: c.model_dump() for n, c in cameras.items()}
    if args.mqtt:
        data["mqtt"] = {**cfg.mqtt.model_dump(), "url": args.mqtt}
        changed.add("mqtt")
    if args.device:
        data["device"] = {"id": args.device}
        changed.add("device")
    if args.data:
        data["data_dir"] = str(Path(args.data).resolve())
        changed.add("data_dir")
    if args.admin:
        data["admin"] = {**cfg.admin.model_dump(), "listen": args.admin}
        changed.add("admin")
    try:
        checked = EdgeConfig.model_validate(data)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ConfigError(f"bad flag: {first[-1].strip() if first else exc}") from None
    return cfg.model_copy(update={key: getattr(checked, key) for key in changed}) if changed else cfg


def cmd_scan(args: argparse.Namespace) -> int:
    from edge.scan import scan
    from edge.wiring import build_rules, rules_from_file

    cfg, base = load_config(args.config)
    cfg = _apply_common(cfg, args)
    if args.rules:
        cfg = cfg.model_copy(update={"rules": rules_from_file(args.rules)})
        if args.watch is None:
            cfg = cfg.model_copy(update={"watch": []})
    rules = build_rules(cfg, base)
    data = Path(args.data) if args.data else None
    scan(args.source, cfg, base, rules, realtime=args.realtime, data_dir=data, camera=args.camera)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.appliance import Appliance
    from edge.wiring import build_rules

    cfg, base = load_config(args.config)
    cfg = _apply_common(cfg, args)
    build_rules(cfg, base, allow_empty=True)  # the file's rule problems, with their lines, before the flags
    cfg = _apply_run_flags(cfg, args)
    if not cfg.cameras and not cfg.admin.listen:
        raise ConfigError(
            "no cameras: add one with --camera NAME=SOURCE, under `cameras:` in the config, "
            "or on the admin page (--admin HOST:PORT)"
        )
    rules = build_rules(cfg, base, allow_empty=True)
    if not rules:
        log.info('watching for nothing yet: waiting for instructions (e.g. "alert me if a fire breaks out")')
    appliance = Appliance(cfg, base, rules)

    def _stop(signum: int, _frame: object) -> None:
        if not appliance.stop_event.is_set():  # said once, however many signals arrive
            name = signal.Signals(signum).name
            log.info("%s: stopping (open events end, queued messages go out first)", name)
        appliance.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    appliance.run_until_stopped()
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from edge.bus.ask import ask
    from edge.bus.mqtt import BusConfigError

    cfg, _ = load_config(args.config)
    mqtt_cfg = cfg.mqtt.model_copy(update={"url": args.mqtt}) if args.mqtt else cfg.mqtt
    if not mqtt_cfg.url:
        raise ConfigError("no MQTT broker: give --mqtt URL or a config with mqtt.url")

    ran_out = True

    def show(answer: dict) -> None:
        nonlocal ran_out
        ran_out = answer.get("kind") == "ack"
        if args.json:
            print(json.dumps(answer), flush=True)
        else:
            print(f"{answer.get('kind')}: {answer.get('text')}", flush=True)

    try:
        status = ask(mqtt_cfg, args.device or cfg.device.id, args.text, args.camera, args.timeout, show)
    except BusConfigError as exc:
        raise ConfigError(str(exc)) from None
    if status == 1:
        print(f"edge: no answer within {args.timeout:g} s: is the appliance running and connected?",
              file=sys.stderr)  # fmt: skip
    elif status == 0 and ran_out:
        print(f"edge: acknowledged; no final answer within {args.timeout:g} s", file=sys.stderr)
    return status


def cmd_explain(args: argparse.Namespace) -> int:
    """What the router would do with a text, as one JSON object, without doing it (DESIGN.md)."""
    from edge.instructions import Context, parse
    from edge.wiring import build_rules, known_labels

    cfg, base = load_config(args.config)
    rules = build_rules(cfg, base, allow_empty=True)
    zones = {name: dict(cam.zones) for name, cam in cfg.cameras.items() if cam.zones}
    known = tuple((r.name, r.label, tuple(r.cfg.cameras) if r.cfg.cameras else None, "config") for r in rules)
    labels = frozenset(known_labels(cfg, base))
    ctx = Context(labels, tuple(cfg.cameras), zones, known, modes=tuple(cfg.modes))
    print(json.dumps(parse(args.text, args.camera, ctx).contract()))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """OK/WARN/FAIL per check with a hint; exit 1 on any FAIL (edge.doctor)."""
    from edge.doctor import main as doctor

    return doctor(args.config, as_json=args.json, timeout_s=args.timeout, skip=frozenset(args.skip))


def _open_log(args: argparse.Namespace) -> EventLog:
    """The event log of --data, or of the config's data_dir, opened as a reader (it leaves the running
    appliance's disk reserve alone)."""
    cfg, base = load_config(args.config)
    data = Path(args.data) if args.data else (Path(base) / cfg.data_dir)
    if not (data / "events.db").exists():
        raise ConfigError(f"no event log in {data}")
    return EventLog(data, reserve_bytes=0)


def cmd_events(args: argparse.Namespace) -> int:
    log_ = _open_log(args)
    try:
        rows = log_.events(limit=args.limit, camera=args.camera, label=args.label)
        backlog = {} if args.json else log_.outbox_backlog()
        dropped = 0 if args.json else log_.outbox_dropped()
    finally:
        log_.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    print(f"{'started':19}  {'ended':19}  {'camera':12} {'label':10} {'score':>5}  id")
    for row in rows:
        print(
            f"{_clock(row.get('started_at'))}  {_clock(row.get('ended_at'))}  {row['camera']:12} "
            f"{row['label']:10} {row['score']:5.2f}  {row['id']}"
        )

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    waiting = []
    for channel, n in backlog.items():
        parts = [count(n["alerts"], "alert")] if n["alerts"] else []
        if n["other"]:
            parts.append(count(n["other"], "other message" if n["alerts"] else "message"))
        waiting.append(f"{' and '.join(parts)} waiting for {channel}")
    line = "; ".join(waiting) if waiting else "empty, everything delivered" if not dropped else "empty"
    if dropped:
        line += f"; {count(dropped, 'message')} dropped undelivered (see edge alerts)"
    print(f"outbox: {line}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Alerts, newest first, and what became of each on every channel (MQTT, push)."""
    log_ = _open_log(args)
    try:
        rows = log_.alert_deliveries(limit=args.limit, camera=args.camera)
    finally:
        log_.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0

    def delivery(channel: str, state: dict, alert_at: float) -> str:
        if state["state"] == "delivered":
            return f"{channel}: delivered {clock(state['at'], alert_at)}"
        if state["state"] == "dropped":
            return f"{channel}: dropped ({state.get('reason') or 'no reason recorded'})"
        tries = state["attempts"]
        if not tries:
            return f"{channel}: pending (queued)"
        return f"{channel}: pending ({tries} {'try' if tries == 1 else 'tries'})"

    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    width = max([4] + [min(40, len(row["text"])) for row in rows])
    print(f"{'time':19}  {'camera':12} {'label':10} {'severity':8} {'text':{width}}  delivery")
    for row in rows:
        states = row["deliveries"]
        shown = ", ".join(delivery(ch, st, row["at"]) for ch, st in states.items()) or "no delivery record"
        print(
            f"{_clock(row['at'])}  {row['camera']:12} {row['label']:10} {row['severity']:8} "
            f"{cut(row['text'], width):{width}}  {shown}"
        )
    if not rows:
        print("(no alerts)")
    return 0


def cmd_asks(args: argparse.Namespace) -> int:
    """Instructions, newest first, with their answers and their blue-loop jobs."""
    log_ = _open_log(args)
    try:
        rows = log_.asks(limit=args.limit)
    finally:
        log_.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0

    def job_line(job: dict) -> str:
        took = f", {job['elapsed_ms']:.0f} ms" if job.get("elapsed_ms") is not None else ""
        tries = job.get("attempts") or 0
        sent = f", {tries} requests" if tries > 1 else ""
        return f"job {job['job_id']} {job['kind']}: {job['status']}{took}{sent}"

    for row in rows:
        camera = f" [{row['camera']}]" if row.get("camera") else ""
        head = f"{_clock(row['received_at'])}  {row['origin']:6} {row['status']:10} {row['id']}{camera}"
        print(f"{head}: {row['text']}")
        for answer in row["answers"]:
            at = _clock(answer["queued_at"])[11:]
            job = f" ({answer['job_id']})" if answer.get("job_id") else ""
            print(f"    {at}  {answer['kind']:10} {answer['text']}{job}")
        for job in row["jobs"]:
            print(f"    {job_line(job)}")
    if not rows:
        print("(no instructions)")
    return 0


def _clock(epoch: float | None) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-" * 19


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    commands = {
        "scan": cmd_scan,
        "run": cmd_run,
        "ask": cmd_ask,
        "explain": cmd_explain,
        "doctor": cmd_doctor,
        "events": cmd_events,
        "alerts": cmd_alerts,
        "asks": cmd_asks,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, SourceError, ModelError, BackendError, StoreError) as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
