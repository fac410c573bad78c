"""Reflex Edge: the device runtime (red loop, event log, bus, delegate client, admin page)."""

__version__ = "0.1.0"
