"""One way to keep credentials out of messages, logs, pages and API answers.

Camera sources, the MQTT broker and push channels are URLs that may carry `user:password@`; anything
that shows one to a person (a log line, an error, the admin page, `status()`) passes it through
`redact` first.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*):[^@\s]*@")
"""scheme://user:password@ — greedy to the last @ before whitespace, so a password holding / or an
unencoded @ is masked whole."""


def redact(text: str) -> str:
    """`text` with every URL password replaced by ***."""
    return _USERINFO.sub(r"\1:***@", text)
