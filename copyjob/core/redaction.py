"""Passwords never appear in output or in stored state: every text that may hold a connection URL goes
through :func:`redact` before it is printed, logged or saved.

Two kinds of secret are hidden:

- the password of a URL's userinfo (``scheme://user:PASSWORD@host``), up to the **last** ``@`` before the host,
  so that an unencoded ``@`` (or ``!``, ``:``) in the password hides all of it; :func:`split_userinfo` is also
  what :mod:`copyjob.core.urls` parses with, so the password that is hidden is the one that is used;
- values of secret-looking parameters in query strings and settings (``?password=…``, ``sslpassword=…``,
  ``secret_key=…``, ``aws_secret_access_key=…``, ``sasl.password=…``, ``'sasl.password': '…'``).
"""

from __future__ import annotations

import re

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_PORT = re.compile(r"[^:/?#]*:\d*(?:[/?#]|$)")
"""``host:5432/db``: a port, not ``user:password`` with an unencoded ``/`` in the password."""
_NOT_IN_EXTRA_SEGMENT = re.compile(r"[?#\"'<>`]|://")

_SECRET_KEYS = (
    r"(?:ssl)?password|passwd|pwd|secret|client_secret|(?:aws_)?secret(?:_access)?_key|(?:aws_)?session_token"
    r"|(?:access_|refresh_|auth_)?token|api_?key|sasl[._]password|sasl\.oauthbearer\.client\.secret"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?<!\w)(?P<key>{_SECRET_KEYS})(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^&\s#'\",;)\]}}]+)")
_QUOTED_KEY = re.compile(
    rf"(?i)(?P<q>['\"])(?P<key>{_SECRET_KEYS})(?P=q)(?P<colon>\s*:\s*)(?P<value>'[^']*'|\"[^\"]*\")")


def split_userinfo(rest: str) -> tuple[str | None, str]:
    """Split what follows ``scheme://`` into userinfo and the rest (host, port, path, query).

    The authority ends at the first ``/``, ``?`` or ``#``, and the userinfo at the last ``@`` inside it
    (RFC 3986; Python's ``urlsplit`` agrees), so ``user:p@ss@host`` has the password ``p@ss``. When the
    authority holds no ``@`` but one follows, an unencoded ``/``, ``?`` or ``#`` sits in the password
    (``user:pa/ss@host/db``): the userinfo ends at that ``@``. Returns ``(None, rest)`` without userinfo."""
    end = _authority_end(rest)
    at = rest.rfind("@", 0, end)
    if at < 0:
        at = rest.find("@")
        head = rest[:at]
        if at < 0 or ":" not in head or _HOST_PORT.match(head) or "://" in head:
            return None, rest
        at = _last_at(rest, at, _authority_end(rest, at + 1))
    return rest[:at], rest[at + 1:]


def _authority_end(rest: str, start: int = 0) -> int:
    ends = [i for i in (rest.find(c, start) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(rest)


def _last_at(rest: str, at: int, end: int) -> int:
    found = rest.rfind("@", at + 1, end)
    return found if found >= 0 else at


def redact(text: str) -> str:
    """``text`` with every URL password and every secret-looking parameter value replaced by ``***``."""
    text = _redact_userinfo(text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    return _QUOTED_KEY.sub(lambda m: f"{m['q']}{m['key']}{m['q']}{m['colon']}{m['value'][0]}{MASK}{m['value'][0]}",
                           text)


def _redact_userinfo(text: str) -> str:
    parts: list[str] = []
    pos = 0
    while (match := _SCHEME.search(text, pos)) is not None:
        start = match.end()
        stop = _word_end(text, start)
        userinfo, _ = split_userinfo(text[start:stop])
        if userinfo is None:
            parts.append(text[pos:start])
            pos = start
            continue
        at = start + _widen(text[start:stop], len(userinfo))
        user, colon, password = text[start:at].partition(":")
        parts.append(text[pos:start] + user + (colon + MASK if colon and password else colon))
        pos = at  # continue at the '@': a second URL in the same text gets its own turn
    parts.append(text[pos:])
    return "".join(parts)


def _word_end(text: str, start: int) -> int:
    found = re.compile(r"\s").search(text, start)
    return found.start() if found else len(text)


def _widen(rest: str, at: int) -> int:
    """Hide more rather than less: an ``@`` further on (before any query, quote or other URL) means the password
    went on past the first ``/`` (``user:p@ss/x@host``), which parsing cannot tell from a path holding ``@``."""
    while True:
        nxt = rest.find("@", at + 1)
        if nxt < 0 or _NOT_IN_EXTRA_SEGMENT.search(rest, at + 1, nxt):
            return at
        at = nxt
