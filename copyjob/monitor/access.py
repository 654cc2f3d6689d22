"""Where the monitor listens and who may act through it.

The rule: on a loopback address (127.0.0.0/8, ::1, ``localhost``) anyone on the machine may read and act, unless
a token was given, in which case the actions need it. On any other address a token is required to start at all;
then the actions *and* the API reads need it (the page asks for it once), while ``/healthz``, ``/metrics`` and
the page's own files stay open for probes and scrapers. Actions also need the ``X-Copyjob-Action`` header, which
a cross-site form cannot send, so a page on another site cannot make a browser on this machine press a button.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass

from copyjob.core.errors import UsageError

TOKEN_ENV = "COPYJOB_TOKEN"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT``, ``:PORT`` (loopback), ``PORT`` or ``[::1]:PORT``."""
        text = text.strip()
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = ("127.0.0.1", text) if text.isdigit() else (text, str(DEFAULT_PORT))
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(f"--http {text}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host, int(port))

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve anywhere
            return False


@dataclass(frozen=True)
class Access:
    token: str | None
    """Needed by actions when set; required off loopback."""
    reads_need_token: bool

    @classmethod
    def of(cls, address: Address, token: str | None, *, force_token: bool = False) -> Access:
        """``force_token``: behave as off loopback whatever the address (for tests and for a loopback port that
        a proxy exposes to others)."""
        token = token or os.environ.get(TOKEN_ENV) or None
        exposed = force_token or not address.loopback
        if exposed and not token:
            raise UsageError(f"--http {address.host}:{address.port} is not a loopback address: the monitor's "
                             f"actions need a token (--token or {TOKEN_ENV})")
        return cls(token, reads_need_token=exposed)

    def allows(self, presented: str | None, *, action: bool) -> bool:
        if self.token is None or not (action or self.reads_need_token):
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())
