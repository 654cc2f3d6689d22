"""Connection URLs: parsing, resolving relative file paths against the job file, and redacting passwords."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from copyjob.core.errors import ConfigurationError
from copyjob.core.redaction import redact, split_userinfo

FILE_SCHEMES = {"sqlite", "duckdb", "parquet"}
"""Schemes naming a database file or a folder the SQLAlchemy way: ``sqlite:///rel.db``, ``sqlite:////abs.db``.
``file`` URLs follow RFC 8089 instead (:func:`parse_file_url`)."""
SCHEME_ALIASES = {
    "postgres": "postgresql", "postgresql+psycopg": "postgresql", "postgresql+psycopg2": "postgresql",
    "mysql+pymysql": "mysql", "mariadb+pymysql": "mariadb",
}


@dataclass(frozen=True)
class ConnectionUrl:
    scheme: str
    raw: str = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    path: Path | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted


def parse_url(raw: str, base_dir: Path | None = None) -> ConnectionUrl:
    """Parse a connection URL; relative file paths resolve against ``base_dir`` (the job file's folder)."""
    if scheme_of(raw) == "file":
        return parse_file_url(raw, base_dir)
    if "://" not in raw:
        raise ConfigurationError(f"not a URL: {redact(raw)!r} (expected scheme://…, e.g. sqlite:///shop.db)")
    head, rest = raw.split("://", 1)
    userinfo, located = split_userinfo(rest)
    parts = urlsplit(f"{head}://{located}")  # the userinfo is split off first: a password may hold '@', '/', '#'
    scheme = SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    query = dict(parse_qsl(parts.query))
    if scheme in FILE_SCHEMES:
        text = unquote((parts.netloc + parts.path) if parts.netloc else parts.path)
        if text.startswith("/") and parts.netloc == "":
            # sqlite:///shop.db is relative, sqlite:////abs/shop.db absolute (SQLAlchemy's convention)
            text = text[1:]
        path = Path(text).expanduser()
        if text in ("", ":memory:"):
            path = Path(":memory:")
        elif not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return ConnectionUrl(scheme=scheme, raw=raw, path=path, query=query)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"bad port in URL {redact(raw)!r}") from exc
    database = unquote(parts.path.lstrip("/")) or None
    user, colon, password = (userinfo or "").partition(":")
    return ConnectionUrl(
        scheme=scheme, raw=raw, username=unquote(user) if user else None,
        password=unquote(password) if colon else None,
        host=parts.hostname, port=port, database=database, query=query,
    )


def scheme_of(raw: str) -> str | None:
    """The scheme ``raw`` names (aliases resolved), None when it names none. ``file`` also for the forms of a
    local folder without ``//``: ``file:inbox``, ``file:/abs/inbox`` and plain paths (:func:`is_plain_path`)."""
    head, sep, _ = raw.partition("://")
    if sep:
        return SCHEME_ALIASES.get(head.lower(), head.lower())
    if raw[:5].lower() == "file:" or is_plain_path(raw):
        return "file"
    return None


def is_plain_path(raw: str) -> bool:
    """A folder written as a path, not a URL: ``./inbox``, ``../data/in``, ``inbox/``, ``/data/in``, ``~/in``."""
    return raw.startswith(("/", "./", "../", "~/")) or raw in (".", "..", "~") or (raw.endswith("/") and ":" not in raw)


def parse_file_url(raw: str, base_dir: Path | None = None) -> ConnectionUrl:
    """A local folder, following RFC 8089: ``file:///abs/path`` and ``file://localhost/abs/path`` are the
    absolute path (``file:////abs/path`` too); ``file:inbox`` and plain paths (``./inbox``, ``inbox/``) are
    relative to ``base_dir`` (the job file's folder). Another host (``file://server/share``) is refused: copyjob
    reads local folders. Plain paths are taken as written (no percent-decoding, no query); ``file:`` URLs may
    carry a query (``?format=csv``)."""
    query: dict[str, str] = {}
    if raw[:5].lower() != "file:":
        text = raw
    else:
        parts = urlsplit(raw)
        query = dict(parse_qsl(parts.query))
        text = unquote(parts.path)
        if raw[5:7] == "//":
            host = parts.netloc
            if host.lower() not in ("", "localhost"):
                rest = f"{host}{text}"
                raise ConfigurationError(
                    f"{redact(raw)}: file://{host}/… names the machine {host!r}; copyjob reads local folders: "
                    f"file:///abs/path for an absolute folder, or ./{rest} (file:{rest}) for one beside the job file")
            if not text.startswith("/"):
                raise ConfigurationError(f"{redact(raw)}: needs a folder, e.g. file:///data/in or ./inbox")
            text = "/" + text.lstrip("/")  # file:////abs (a spelling older copyjob documented) is /abs too
    if not text:
        raise ConfigurationError(f"{redact(raw)}: needs a folder, e.g. file:///data/in or ./inbox")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return ConnectionUrl(scheme="file", raw=raw, path=path, query=query)


def identity(url: ConnectionUrl) -> str:
    """Which system and place ``url`` points at, without credentials: ``postgresql://db.prod:5432/shop``,
    ``sqlite:///abs/path/shop.db``, ``s3://bucket/prefix@http://127.0.0.1:9000``.

    The state store keys a job's state by it, so one job deployed to two destinations (``--env dev`` and
    ``--env prod``) keeps two states that never mix."""
    if url.path is not None:
        path = url.path if str(url.path) == ":memory:" else url.path.expanduser().resolve()
        return f"{url.scheme}://{path.as_posix()}"
    if url.scheme == "s3":
        located = split_userinfo(url.raw.split("://", 1)[1])[1]  # keys in the userinfo are no part of it
        bucket_and_prefix = located.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        endpoint = url.query.get("endpoint_url") or url.query.get("endpoint") or ""
        return f"s3://{bucket_and_prefix}" + (f"@{endpoint}" if endpoint else "")
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{host}{port}/{url.database or ''}"
