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


class Endpoint(_Strict):
    url: str = Field(description="Connection URL: sqlite:///…, postgresql://…, mysql://…, duckdb:///…, "
                     "file:///dir, s3://bucket/prefix, parquet:///dir")
    format: FileFormat | None = Field(default=None, description="file destinations: format of new files")
    options: dict[str, str] = Field(default_factory=dict, description="s3: endpoint_url, access_key, "
                                    "secret_key, region, …")


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

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron: or every:")
        if self.every is not None and parse_duration(self.every) <= 0:
            raise ValueError("every: must be positive")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"not a valid cron expression: {self.cron!r}")
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


class Trigger(_Strict):
    file_arrival: FileArrival


class CopySettings(_Strict):
    mode: Mode = "full"
    update_method: Method = "append"
    truncate_before_full_load: bool = False
    create_tables: bool = True
    batch_rows: int = Field(default=50_000, ge=100, le=5_000_000)
    parallel: int = Field(default=2, ge=1, le=32, description="readers per table for full loads")


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
    group_id: str | None = Field(default=None, description="apply consumer group (default copyjob.<job>, "
                                                                      "copyjob.<job>_<env> with --env)")


class Publication(_Strict):
    name: str | None = None
    create: bool = True


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
