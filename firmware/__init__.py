"""The device-image side of Reflex Edge: provisioning bundles, first boot, signed updates.

`firmware/firstboot.py` and `firmware/update.py` are scripts run by systemd units as root; the tools on
the installer's and the release manager's laptop (`tools/provision`, `tools/sign_update`) build what
they apply. `firmware.common` holds what both sides share: the device layout, bundle members, hashes,
versions and keys. `update.py` and `firmware.common` import nothing from `edge` (only the standard
library and `cryptography`), so the updater still runs when the release it replaces is broken.
"""
