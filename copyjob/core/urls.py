"""Connection URLs: parsing, resolving relative file paths against the job file, and redacting passwords."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from copyjob.core.errors import ConfigurationError
from copyjob.core.redaction import redact

FILE_SCHEMES = {"sqlite", "duckdb", "parquet", "file"}
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
    if "://" not in raw:
        raise ConfigurationError(f"not a URL: {redact(raw)!r} (expected scheme://…, e.g. sqlite:///shop.db)")
    parts = urlsplit(raw)
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
    return ConnectionUrl(
        scheme=scheme, raw=raw,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname, port=port, database=database, query=query,
    )


def identity(url: ConnectionUrl) -> str:
    """Which system and place ``url`` points at, without credentials: ``postgresql://db.prod:5432/shop``,
    ``sqlite:///abs/path/shop.db``, ``s3://bucket/prefix@http://127.0.0.1:9000``.

    The state store keys a job's state by it, so one job deployed to two destinations (``--env dev`` and
    ``--env prod``) keeps two states that never mix."""
    if url.path is not None:
        path = url.path if str(url.path) == ":memory:" else url.path.expanduser().resolve()
        return f"{url.scheme}://{path.as_posix()}"
    if url.scheme == "s3":
        bucket_and_prefix = url.raw.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        endpoint = url.query.get("endpoint_url") or url.query.get("endpoint") or ""
        return f"s3://{bucket_and_prefix}" + (f"@{endpoint}" if endpoint else "")
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{host}{port}/{url.database or ''}"
