"""The job file model (pydantic v2). Field names are the user-facing contract: keep them.

A job file is loaded by :mod:`copyjob.loader`, which resolves ``${NAME}`` variables and maps validation
errors back to the file's line numbers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from copyjob.core.capture import CaptureOptions
    from copyjob.core.plan import TableJob

Mode = Literal["full", "incremental", "cdc"]
Method = Literal["append", "overwrite", "merge"]
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
"""A PostgreSQL replication slot name: lower case letters, digits and ``_``, at most 63 bytes (the server's rule)."""
PUBLICATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""A publication name: an identifier of letters, digits and ``_`` not starting with a digit, at most 63 bytes.
copyjob quotes it, so more would work; this rule keeps it usable unquoted in psql and other tools."""
CRON_NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FileFormat = Literal["csv", "jsonl", "parquet"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str | float) -> float:
    """``15m`` → 900.0 seconds (units ms, s, m, h, d; a bare number is seconds)."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def url_problem(url: str) -> str | None:
    """Why ``url`` names no system copyjob can open (None when it names one): its scheme is one of the connector
    registry's (:data:`copyjob.connectors.REGISTRY`) and it parses."""
    from copyjob.connectors import REGISTRY
    from copyjob.core.errors import ConfigurationError
    from copyjob.core.urls import parse_url, scheme_of

    scheme = scheme_of(url)
    known = ", ".join(f"{s}://" for s in sorted(REGISTRY))
    if scheme is None:
        return f"not a URL: expected scheme://… (known: {known}) or a folder such as ./inbox"
    if scheme not in REGISTRY:
        return f"unknown URL scheme {scheme!r} (known: {known})"
    try:
        parse_url(url)
    except ConfigurationError as exc:
        return str(exc)
    return None


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a schedule copyjob runs (None when it is): five fields (minute hour day-of-month month
    day-of-week; a sixth, seconds, is accepted) or a nickname (@daily, …), valid, and firing at least once (not
    ``0 0 31 2 *``). croniter would take a seventh field (a year) that makes a schedule stop for good."""
    from datetime import datetime

    from croniter import croniter
    from croniter.croniter import CroniterError

    fields = expr.split()
    if not (len(fields) in (5, 6) or (len(fields) == 1 and fields[0].lower() in CRON_NICKNAMES)):
        return (f"{expr!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}: a cron expression has five "
                "(minute hour day-of-month month day-of-week; a sixth, seconds, is accepted), or is one of "
                f"{', '.join(CRON_NICKNAMES)}")
    if not croniter.is_valid(expr):
        return f"not a valid cron expression: {expr!r}"
    try:
        croniter(expr, datetime.now()).get_next(datetime)
    except CroniterError:
        return f"{expr!r} never fires (no such date, such as 31 February)"
    return None


class Endpoint(_Strict):
    url: str = Field(description="Connection URL: sqlite:///…, postgresql://…, mysql://…, duckdb:///…, "
                     "file:///dir, s3://bucket/prefix, parquet:///dir")
    format: FileFormat | None = Field(default=None, description="file destinations: format of new files")
    options: dict[str, str] = Field(default_factory=dict, description="s3: endpoint_url, access_key, "
                                    "secret_key, region, …")
    follow_symlinks_outside: bool = Field(default=False, description="a local file source: read symbolic "
                                          "links that lead outside its folder (skipped with a warning otherwise)")

    @field_validator("url")
    @classmethod
    def _opens(cls, v: str) -> str:
        problem = url_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class CsvOptions(_Strict):
    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    quote_char: str = '"'
    null_values: list[str] = Field(default_factory=lambda: [""])


class Schedule(_Strict):
    cron: str | None = None
    every: str | None = None
    timezone: str | None = Field(default=None, description="IANA name; default: the machine's local time")

    @field_validator("cron")
    @classmethod
    def _fires(cls, v: str | None) -> str | None:
        problem = cron_problem(v) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron: or every:")
        if self.every is not None and parse_duration(self.every) <= 0:
            raise ValueError("every: must be positive")
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class FileArrival(_Strict):
    path: str
    pattern: str = "*"
    debounce: str = "2s"
    recursive: bool = False

    @field_validator("debounce")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("pattern")
    @classmethod
    def _inside(cls, v: str) -> str:
        from copyjob.core.paths import pattern_problem

        problem = pattern_problem(v, "the trigger folder")
        if problem:
            raise ValueError(problem)
        return v


class Trigger(_Strict):
    file_arrival: FileArrival


class CopySettings(_Strict):
    mode: Mode = "full"
    update_method: Method = "append"
    truncate_before_full_load: bool = False
    create_tables: bool = True
    batch_rows: int = Field(default=50_000, ge=100, le=5_000_000)
    parallel: int = Field(default=2, ge=1, le=32, description="readers per table for full loads")
    max_outage: str | None = Field(default=None, description="how long a stream waits for its source or "
                                   "destination to come back before it fails (e.g. 10m, or never); default: "
                                   "never for stream, 5m for run")

    @field_validator("max_outage")
    @classmethod
    def _outage(cls, v: str | None) -> str | None:
        if v is not None and v.strip() != "never":
            parse_duration(v)
        return v

    def max_outage_s(self, *, streaming: bool) -> float | None:
        """Seconds to wait for a source or destination that went away; None: forever."""
        from copyjob.core.retry import RUN_MAX_OUTAGE_S

        if self.max_outage is None:
            return None if streaming else RUN_MAX_OUTAGE_S
        return None if self.max_outage.strip() == "never" else parse_duration(self.max_outage)


class TableSpec(_Strict):
    name: str
    target: str | None = None
    incremental_column: str | None = None
    key: list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    mode: Mode | None = None
    update_method: Method | None = None
    truncate_before_full_load: bool | None = None
    # file sources: a set of files, labelled by ``name``
    pattern: str | None = Field(default=None, description="glob of files (recursive with **)")
    format: FileFormat | None = None
    csv: CsvOptions | None = None
    source_file_column: bool = Field(default=False, description="add a _source_file column")

    @field_validator("name", "target")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one column")
        return v

    @property
    def target_name(self) -> str:
        return self.target or self.name


Transport = Literal["direct", "kafka"]


class KafkaSettings(_Strict):
    bootstrap_servers: str
    topic_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                     description="topics are <prefix>.<schema>.<table> (default copyjob, and "
                                                 "copyjob.<env> with --env)")
    format: Literal["avro", "json"] = "avro"
    schema_registry_url: str = ""
    config: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                        description="passed through to librdkafka")
    partitions: int = Field(default=3, ge=1, le=1000, description="partitions of topics the job creates")
    replication_factor: int = Field(default=1, ge=1, le=10)
    max_message_bytes: int = Field(default=16 * 2**20, ge=2**10, le=64 * 2**20,
                                   description="largest message (one row or change, key and value) the job "
                                               "sends: topics it creates, the producer and the consumers are "
                                               "set for it; a larger row fails its table")
    group_id: str | None = Field(default=None, description="apply consumer group (default copyjob.<job>, "
                                                                      "copyjob.<job>_<env> with --env)")


class Publication(_Strict):
    name: str | None = None
    create: bool = True

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not PUBLICATION_NAME.match(v):
            raise ValueError(f"{v!r}: a publication name is letters, digits and _, not starting with a digit, "
                             "at most 63 bytes")
        return v


class CdcSettings(_Strict):
    """Log-based change capture options (PostgreSQL slot/publication, MySQL server id)."""

    slot: str | None = Field(default=None, description="PostgreSQL replication slot (default: copyjob_<job>)")
    publication: Publication = Field(default_factory=Publication)
    heartbeat: str = "10s"
    server_id: int | None = Field(default=None, ge=1, description="MySQL/MariaDB replica server id")
    max_lag_bytes: int | None = Field(default=None, ge=0, description="status warns and check fails above")
    max_lag_seconds: float | None = Field(default=None, ge=0)
    batch_events: int = Field(default=10_000, ge=1)
    max_batch_delay: str = "200ms"

    @field_validator("heartbeat", "max_batch_delay")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("slot")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not SLOT_NAME.match(v):
            raise ValueError(f"{v!r}: a replication slot name is lower case letters, digits and _, at most 63 bytes")
        return v

    def as_capture_options(self) -> CaptureOptions:
        """The options a log source captures with (``copyjob.ingest.open_log_source``)."""
        from copyjob.core.capture import CaptureOptions

        return CaptureOptions(slot=self.slot, publication=self.publication.name,
                              publication_create=self.publication.create, server_id=self.server_id,
                              batch_events=self.batch_events, max_batch_delay_s=parse_duration(self.max_batch_delay),
                              heartbeat_s=parse_duration(self.heartbeat))


class Job(_Strict):
    job: str
    source: Endpoint
    destination: Endpoint
    copy_settings: CopySettings = Field(default_factory=CopySettings, alias="copy")
    tables: list[TableSpec] = Field(min_length=1)
    state: str | None = Field(default=None, description="state store URL (SQLite path or PostgreSQL URL)")
    schedules: list[Schedule] = Field(default_factory=list)
    triggers: list[Trigger] = Field(default_factory=list)
    transport: Transport = "direct"
    kafka: KafkaSettings | None = None
    cdc: CdcSettings = Field(default_factory=CdcSettings)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("job")
    @classmethod
    def _job_name(cls, v: str) -> str:
        if not _JOB_NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the state and the marker)")
        return v


class ResolvedTable(BaseModel):
    """A table entry with the job-wide defaults applied."""

    model_config = ConfigDict(frozen=True)

    index: int
    spec: TableSpec
    mode: Mode
    update_method: Method
    truncate_before_full_load: bool

    @property
    def name(self) -> str:
        return self.spec.name

    def as_table_job(self) -> TableJob:
        """The entry as the stages see it (copyjob.core.plan)."""
        from copyjob.core.plan import TableJob

        s = self.spec
        return TableJob(name=s.name, target_name=s.target_name, mode=self.mode, update_method=self.update_method,
                        truncate_before_full_load=self.truncate_before_full_load,
                        key=tuple(s.key) if s.key else None, columns=dict(s.columns),
                        incremental_column=s.incremental_column, index=self.index, definition=self.definition())

    def definition(self) -> dict[str, Any]:
        """What an edit of the entry may not change without the table starting over (``TableJob.definition``)."""
        s = self.spec
        return {"source": s.name, "mode": "cdc" if self.mode == "cdc" else "polled",
                "incremental_column": s.incremental_column,
                "key": list(s.key) if s.key and self.update_method == "merge" else None,
                "update_method": self.update_method, "target": s.target_name, "columns": dict(s.columns),
                "pattern": s.pattern, "format": s.format}


def resolve_tables(job: Job) -> list[ResolvedTable]:
    c = job.copy_settings
    return [
        ResolvedTable(
            index=i, spec=t,
            mode=t.mode or c.mode,
            update_method=t.update_method or c.update_method,
            truncate_before_full_load=(
                t.truncate_before_full_load if t.truncate_before_full_load is not None
                else c.truncate_before_full_load
            ),
        )
        for i, t in enumerate(job.tables)
    ]
