#!/usr/bin/env python3
"""Apply a provisioning bundle (made by tools/provision) once, idempotently, then remove it.

Usage (as root, by reflex-firstboot.service when /boot/reflex-provision.tar.gz exists):
  firstboot.py [BUNDLE] [--root DIR] [--owner USER] [--data DIR] [--keep]

Installs the bundle's files into /etc/reflex-edge (config.yaml, mqtt-password and device.key 0600 and
owned by the service user; CA, certificate, update keys and model manifests 0644 root's), creates the
admin account in the event log (skipped when it exists), records completion in
/etc/reflex-edge/provisioned.json and removes the bundle. Running it again, or after a crash half-way,
ends exactly where one clean run ends. Nothing is written unless the whole bundle checks out (hashes,
config validated by the appliance's loader, admin entry); then the bundle stays for a look.
Exit status: 0 applied (or no bundle), 1 refused, with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.store.db import StoreError
from firmware.common import BundleError, Layout
from firmware.provisioning import apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firstboot.py", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, help="default: ROOT/boot/reflex-provision.tar.gz")
    parser.add_argument("--root", help="prefix of every device path (default: / or $REFLEX_EDGE_ROOT)")
    parser.add_argument(
        "--owner",
        default="reflex",
        help="service user that owns the secrets and the event log ('' : leave them root's)",
    )
    parser.add_argument(
        "--data", type=Path, help="event log folder (default: the config's data_dir under ROOT)"
    )
    parser.add_argument("--keep", action="store_true", help="do not remove the bundle afterwards")
    args = parser.parse_args(argv)
    layout = Layout.from_option(args.root)
    bundle = args.bundle or layout.boot_bundle
    if not bundle.exists():
        print(f"firstboot: no provisioning bundle at {bundle}: nothing to do")
        return 0
    try:
        report = apply(bundle, layout, owner=args.owner, data_dir=args.data, keep=args.keep)
    except BundleError as exc:
        print(f"firstboot: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"firstboot: the event log: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"firstboot: failed: {exc}", file=sys.stderr)
        return 1
    for line in report:
        print(f"firstboot: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
