"""Passwords never appear in output or in stored state: every text that may hold a connection URL goes
through :func:`redact` before it is printed, logged or saved."""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<post>@)")


def redact(text: str) -> str:
    """Replace every password inside URLs in ``text`` with ``***``."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['pre']}***{m['post']}", text)
