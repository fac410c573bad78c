"""What the admin page's HTTP tests share: the first admin made on /setup, the CSRF token a page
carries, and JSON calls as the page's script (app.js) makes them."""

from __future__ import annotations

import re
from typing import Any

import httpx

ADMIN, ADMIN_PW = "alice", "correct horse battery"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf(client: httpx.Client, path: str) -> str:
    """The CSRF token of the page at `path`, as its <meta name="csrf-token"> has it."""
    match = CSRF_META.search(client.get(path).text)
    assert match, f"no csrf meta on {path}"
    return match.group(1)


def api(client: httpx.Client, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    """A JSON call as app.js makes it: the session cookie plus the page's CSRF token in a header."""
    return client.request(method, path, json=body, headers={"X-CSRFToken": csrf(client, "/")}, **kw)


def set_up_admin(client: httpx.Client, name: str = ADMIN, password: str = ADMIN_PW) -> None:
    """Make the first admin on the /setup page; `client` has its session from then on."""
    fields = {
        "username": name,
        "password": password,
        "password2": password,
        "csrf_token": csrf(client, "/setup"),
    }
    assert client.post("/setup", data=fields).status_code == 302
