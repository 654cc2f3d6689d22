"""The job file model (pydantic v2). Field names are the user-facing contract: keep them.

A job file is loaded by :mod:`copyjob.loader`, which resolves ``${NAME}`` variables and maps validation
errors back to the file's line numbers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

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
TableFormat = Literal["delta", "iceberg"]
"""Lakehouse table formats a file:// or s3:// destination can hold (``destination.format``)."""
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


def duration_from_env(name: str, default_s: float) -> float:
    """A positive duration from the environment variable ``name`` (e.g. ``0.2s``), else ``default_s``; a bad
    value is a UsageError naming the variable."""
    import os

    from copyjob.core.errors import UsageError

    text = os.environ.get(name)
    try:
        seconds = parse_duration(text) if text else default_s
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{name} must be positive")
    return seconds


def _number_as_text(value: Any) -> Any:
    """A bare number in a duration field is seconds (``every: 60``): kept as its text, like ``"60"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return value


Duration = Annotated[str, BeforeValidator(_number_as_text),
                     WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}]})]
"""A duration: text with a unit (``30s``, ``15m``, ``2h``, ``250ms``, ``1d``) or a bare number of seconds."""


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
    """A system to read from or write to: a database, a folder or an S3 prefix, named by its URL."""

    url: str = Field(description="Connection URL: sqlite:///…, postgresql://…, mysql://…, duckdb:///…, "
                     "file:///dir, s3://bucket/prefix, parquet:///dir",
                     examples=["postgresql://app:${PG_PASSWORD}@${PG_HOST}:5432/shop", "duckdb:///warehouse.duckdb",
                               "mysql://copyjob:${MYSQL_PASSWORD}@db:3306/shop", "./inbox", "s3://lake/raw"])
    format: FileFormat | TableFormat | None = Field(
        default=None, description="file destinations: format of new files (csv, jsonl, parquet), or a lakehouse "
        "table format (delta: Delta Lake tables; iceberg: Apache Iceberg tables, catalog in options)")
    options: dict[str, str] = Field(default_factory=dict, description="s3: endpoint_url, access_key, "
                                    "secret_key, region, …; a kafka:// source: format, group_id, start, "
                                    "topic_prefix, schema_registry_url, pattern_refresh (see KafkaSourceOptions)",
                                    examples=[{"endpoint_url": "${S3_ENDPOINT}", "region": "eu-west-1",
                                               "access_key": "${AWS_ACCESS_KEY_ID}",
                                               "secret_key": "${AWS_SECRET_ACCESS_KEY}"}])
    follow_symlinks_outside: bool = Field(default=False, description="a local file source: read symbolic "
                                          "links that lead outside its folder (skipped with a warning otherwise)")

    @field_validator("url")
    @classmethod
    def _opens(cls, v: str) -> str:
        problem = url_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class KafkaSourceOptions(_Strict):
    """``source.options`` of a ``kafka://host:port`` source, whose ``tables:`` entries name topics of change
    events (checked by the loader at each key's line)."""

    format: Literal["debezium", "avro", "json"] = Field(
        default="debezium", description="how the topics are written: debezium = Kafka Connect JSON as Debezium's "
        "connectors (or copyjob's format: debezium) write it, with or without schemas; avro or json = copyjob's "
        "own formats (their schemas in <topic_prefix>._schemas or the registry)")
    group_id: str | None = Field(default=None, description="consumer group (default copyjob.<job>); the "
                                 "destination's markers, not the group, say where each partition stands")
    start: Literal["earliest", "latest"] = Field(default="earliest", description="where a partition the "
                                                 "destination holds nothing of starts: its oldest event, or only "
                                                 "events published from the job's first run on "
                                                 "(that run stores each partition's end as its marker)")
    topic_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$", description="avro/json: the "
                                     "publishing job's topic prefix (its schema topic); also names the dead-letter "
                                     "topics <prefix>.<table>.dlq (default copyjob)")
    schema_registry_url: str = Field(default="", description="avro: the publishing job's schema registry")
    pattern_refresh: Duration = Field(default="30s", description="how often copyjob stream lists the broker's "
                                      "topics again for the tables' topic patterns (a new topic is applied "
                                      "within this long)", examples=["30s", "5m"])

    @field_validator("pattern_refresh")
    @classmethod
    def _refresh(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("must be positive")
        return v

    @property
    def pattern_refresh_s(self) -> float:
        return parse_duration(self.pattern_refresh)


class CsvOptions(_Strict):
    """How CSV files of a file set are read."""

    delimiter: str = Field(default=",", description="field separator", examples=[",", ";", "\t"])
    header: bool = Field(default=True, description="the first line names the columns")
    encoding: str = Field(default="utf-8", description="text encoding of the files", examples=["utf-8", "latin-1"])
    quote_char: str = Field(default='"', description="character that quotes a field holding the delimiter")
    null_values: list[str] = Field(default_factory=lambda: [""], description="texts read as NULL (default: the "
                                   "empty field)", examples=[["", "NULL", "\\N"]])


class Schedule(_Strict):
    """When `copyjob serve` runs the job: exactly one of cron or every."""

    cron: str | None = Field(default=None, description="cron expression: minute hour day-of-month month "
                             "day-of-week (a sixth field, seconds, is accepted) or @hourly, @daily, @weekly, "
                             "@monthly, @yearly", examples=["0 6 * * *", "*/15 * * * *", "@daily"])
    every: Duration | None = Field(default=None, description="interval from the previous fire: a duration with unit "
                              "ms, s, m, h or d (a number without unit, quoted, is seconds)",
                              examples=["15m", "1h", "30s"])
    timezone: str | None = Field(default=None, description="IANA name; default: the machine's local time",
                                 examples=["Europe/Berlin", "UTC"])

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
    """Run the job when files arrive in a folder."""

    path: str = Field(description="folder to watch, relative to the job file", examples=["./inbox"])
    pattern: str = Field(default="*", description="glob of the file names that count as arrivals",
                         examples=["*.csv"])
    debounce: Duration = Field(default="2s", description="wait this long after the last arrival, then run once for "
                          "the batch (duration: ms, s, m, h, d)", examples=["2s", "1m"])
    recursive: bool = Field(default=False, description="watch subfolders too")

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
    """An event that makes `copyjob serve` run the job."""

    file_arrival: FileArrival = Field(description="run when matching files arrive in a folder")


class CheckSettings(_Strict):
    """What ``copyjob check`` alerts on besides failures and CDC lag."""

    max_age: Duration | None = Field(default=None, description="fail the check when the last successful run is "
                                "older than this (e.g. 26h); per table, or job-wide")

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("must be a positive duration")
        return v

    @property
    def max_age_s(self) -> float | None:
        return None if self.max_age is None else parse_duration(self.max_age)


class CopySettings(_Strict):
    """Job-wide defaults for every table (mode, update method, truncation may be set per table too)."""

    mode: Mode = Field(default="full", description="full: copy everything each run; incremental: rows whose "
                       "incremental_column grew (files: new or changed files); cdc: change data capture from the "
                       "database log")
    update_method: Method = Field(default="append", description="append: insert rows; overwrite: replace the "
                                  "table's contents; merge: upsert by key (and apply deletes in cdc)")
    truncate_before_full_load: bool = Field(default=False, description="empty the destination table before each "
                                            "full copy")
    create_tables: bool = Field(default=True, description="create missing destination tables")
    batch_rows: int = Field(default=50_000, ge=100, le=5_000_000, description="rows per Arrow batch")
    parallel: int = Field(default=2, ge=1, le=32, description="readers per table for full loads (integer "
                          "primary keys)")
    max_outage: Duration | None = Field(default=None, description="how long a stream waits for its source or "
                                   "destination to come back before it fails (e.g. 10m, or never); default: "
                                   "never for stream, 5m for run", examples=["10m", "1h", "never"])

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
    """One table to copy (a database source) or one set of files (a file source)."""

    name: str = Field(description="source table (schema.table), or the name of a file set; a kafka:// source: "
                      "a topic, or with a leading ^ a regular expression over topic names",
                      examples=["public.orders", "shop.customers", "sales", "^shop\\.public\\..*"])
    target: str | None = Field(default=None, description="destination table (default: the same name); for a "
                               "topic pattern a template with ${topic}, ${source.schema}, ${source.table}",
                               examples=["orders", "raw.orders", "${source.table}"])
    incremental_column: str | None = Field(default=None, description="the column whose growth marks new rows "
                                           "(required for mode incremental from a database)",
                                           examples=["updated_at", "id"])
    key: list[str] | None = Field(default=None, description="merge key columns (default: the source primary "
                                  "key)", examples=[["id"], ["order_id", "line_no"]])
    columns: dict[str, str] = Field(default_factory=dict, description="rename map: source column → "
                                    "destination column", examples=[{"customer_id": "cust_id"}])
    mode: Mode | None = Field(default=None, description="this table's mode (default: copy.mode)")
    update_method: Method | None = Field(default=None, description="this table's update method (default: "
                                         "copy.update_method)")
    truncate_before_full_load: bool | None = Field(default=None, description="default: "
                                                   "copy.truncate_before_full_load")
    # file sources: a set of files, labelled by ``name``
    pattern: str | None = Field(default=None, description="glob of files (recursive with **)",
                                examples=["*.csv", "**/*.parquet", "2026/*.jsonl"])
    format: FileFormat | None = Field(default=None, description="format of the files (default: from the "
                                      "pattern's extension)")
    csv: CsvOptions | None = Field(default=None, description="how CSV files are read")
    source_file_column: bool = Field(default=False, description="add a _source_file column")
    check: CheckSettings | None = Field(default=None, description="alert thresholds of this table "
                                        "(they override the job's check:)")
    partition_by: list[str] | None = Field(default=None, description="lakehouse destinations (format: delta, "
                                           "iceberg): the destination columns the table is partitioned by when "
                                           "copyjob creates it", examples=[["day"], ["country", "day"]])

    @field_validator("name", "target")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("key", "partition_by")
    @classmethod
    def _key_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one column")
        return v

    @property
    def target_name(self) -> str:
        return self.target or self.name


Transport = Literal["direct", "kafka"]


class DebeziumSettings(_Strict):
    """`kafka.format: debezium`: Kafka Connect JSON as Debezium's connectors write it."""

    schemas: bool = Field(default=True, description="the {schema, payload} envelope for keys and values (Connect's "
                          "JsonConverter with schemas.enable=true); false: payload only")
    decimal_handling: Literal["precise", "string", "double"] = Field(
        default="precise", description="Debezium's decimal.handling.mode: precise = Connect Decimal (base64 of "
                                       "the unscaled value, scale as a schema parameter), string, or double")
    transaction_metadata: bool = Field(default=False, description="Debezium's provide.transaction.metadata: "
                                       "BEGIN/END records on <prefix>.transaction and a transaction block in "
                                       "each change event")


class KafkaSettings(_Strict):
    """The broker and topics of `transport: kafka`."""

    bootstrap_servers: str = Field(description="Kafka brokers, host:port[,host:port…]",
                                   examples=["${KAFKA}", "kafka:9092", "localhost:9094"])
    topic_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                     description="topics are <prefix>.<schema>.<table> (default copyjob, and "
                                                 "copyjob.<env> with --env)")
    format: Literal["avro", "json", "debezium"] = Field(default="avro", description="encoding of the messages "
                                                        "(debezium: Kafka Connect JSON as Debezium writes it)")
    debezium: DebeziumSettings = Field(default_factory=DebeziumSettings, description="options of format: debezium")
    partitioner: str | None = Field(default=None, description="librdkafka's partitioner (murmur2_random: as "
                                    "Java's default partitioner, so Java consumers co-partition)",
                                    examples=["murmur2_random"])
    schema_registry_url: str = Field(default="", description="optional Confluent-compatible schema registry",
                                     examples=["http://registry:8081"])
    config: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                        description="passed through to librdkafka",
                                                        examples=[{"security.protocol": "SASL_SSL",
                                                                   "sasl.mechanism": "PLAIN"}])
    partitions: int = Field(default=3, ge=1, le=1000, description="partitions of topics the job creates")
    replication_factor: int = Field(default=1, ge=1, le=10, description="replication factor of topics the job "
                                    "creates")
    max_message_bytes: int = Field(default=16 * 2**20, ge=2**10, le=64 * 2**20,
                                   description="largest message (one row or change, key and value) the job "
                                               "sends: topics it creates, the producer and the consumers are "
                                               "set for it; a larger row fails its table")
    group_id: str | None = Field(default=None, description="apply consumer group (default copyjob.<job>, "
                                                                      "copyjob.<job>_<env> with --env)")


class Publication(_Strict):
    """The PostgreSQL publication a cdc job reads."""

    name: str | None = Field(default=None, description="publication name (default: copyjob_<job>)",
                             examples=["copyjob_orders"])
    create: bool = Field(default=True, description="create (and keep up to date) the publication; false: use an "
                         "existing one that a DBA manages")

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not PUBLICATION_NAME.match(v):
            raise ValueError(f"{v!r}: a publication name is letters, digits and _, not starting with a digit, "
                             "at most 63 bytes")
        return v


MAX_BATCH_DELAY: dict[str, str] = {"direct": "200ms", "kafka": "50ms"}
"""``cdc.max_batch_delay`` by transport. Through Kafka a change waits for its batch twice (capture, then apply),
and a consumer that falls behind still commits whole queues of batches at once (ingest/postgres_cdc/stream.py):
measured with benchmarks/kafka_cdc_bench.py (latency) and benchmarks/debezium_bench.py (throughput)."""


class CdcSettings(_Strict):
    """Log-based change capture options (PostgreSQL slot/publication, MySQL server id)."""

    slot: str | None = Field(default=None, description="PostgreSQL replication slot (default: copyjob_<job>)")
    publication: Publication = Field(default_factory=Publication, description="PostgreSQL publication")
    heartbeat: Duration = Field(default="10s", description="how often the capture confirms its position while idle "
                           "(duration: ms, s, m, h, d)", examples=["10s"])
    server_id: int | None = Field(default=None, ge=1, description="MySQL/MariaDB replica server id")
    max_lag_bytes: int | None = Field(default=None, ge=0, description="status warns and check fails above")
    max_lag_seconds: float | None = Field(default=None, ge=0, description="status warns and check fails when "
                                          "the capture is this many seconds behind")
    batch_events: int = Field(default=10_000, ge=1, description="changes per applied batch, at most")
    max_batch_delay: Duration | None = Field(
        default=None, description="longest wait to fill a batch (duration: ms, s, m, h, d); default 200ms, and 50ms "
        "with transport: kafka (a batch is one producer flush, and the apply side batches again)",
        examples=["200ms", "50ms", "1s"])

    @field_validator("heartbeat", "max_batch_delay")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("slot")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not SLOT_NAME.match(v):
            raise ValueError(f"{v!r}: a replication slot name is lower case letters, digits and _, at most 63 bytes")
        return v

    def as_capture_options(self, transport: Transport = "direct") -> CaptureOptions:
        """The options a log source captures with (``copyjob.ingest.open_log_source``) for a job of ``transport``."""
        from copyjob.core.capture import CaptureOptions

        delay = self.max_batch_delay or MAX_BATCH_DELAY[transport]
        return CaptureOptions(slot=self.slot, publication=self.publication.name,
                              publication_create=self.publication.create, server_id=self.server_id,
                              batch_events=self.batch_events, max_batch_delay_s=parse_duration(delay),
                              heartbeat_s=parse_duration(self.heartbeat))


class Job(_Strict):
    """A copyjob job file: what to copy from a source to a destination, how, and when."""

    job: str = Field(description="the job's name: it names its state, lock and default slot, topic and group "
                     "names; letters, digits, . _ -", examples=["shop-to-warehouse"])
    source: Endpoint = Field(description="where the data comes from")
    destination: Endpoint = Field(description="where the data goes")
    copy_settings: CopySettings = Field(default_factory=CopySettings, alias="copy",
                                        description="defaults for every table: mode, update method, batch size")
    tables: list[TableSpec] = Field(min_length=1, description="the tables (or file sets) to copy")
    state: str | None = Field(default=None, description="state store URL (SQLite path or PostgreSQL URL)",
                              examples=[".copyjob/state.db", "postgresql://copyjob@${PG_HOST}/copyjob_state"])
    schedules: list[Schedule] = Field(default_factory=list, description="when `copyjob serve` runs the job")
    triggers: list[Trigger] = Field(default_factory=list, description="events that make `copyjob serve` run "
                                    "the job")
    transport: Transport = Field(default="direct", description="direct: one process, no broker; kafka: capture "
                                 "and apply apart, through Kafka (needs the kafka: section)")
    kafka: KafkaSettings | None = Field(default=None, description="broker and topics for transport: kafka")
    cdc: CdcSettings = Field(default_factory=CdcSettings, description="change data capture options for mode cdc")
    check: CheckSettings = Field(default_factory=CheckSettings, description="what `copyjob check` alerts on "
                                 "besides failures and CDC lag")

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


SCHEMA_ID = "urn:copyjob:jobfile"
"""The ``$id`` of the job file's JSON Schema (docs/jobfile.schema.json; ``copyjob schema`` prints it)."""
VARIABLE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
            "description": "a ${VARIABLE}, resolved when the job is loaded"}
"""A value that is a variable reference: where a number, boolean, choice or pattern is expected, the loader
resolves the variable first and checks the text it gives, so an editor must accept it."""


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a job file, with a description for every key."""
    from pydantic.json_schema import GenerateJsonSchema

    class JobFileSchema(GenerateJsonSchema):
        """Pydantic's schema, where a non-text value (number, boolean, one of a list, text of a pattern) may
        also be a ``${VARIABLE}``: variables are resolved before validation."""

        def _or_variable(self, schema: dict[str, Any]) -> dict[str, Any]:
            return {"anyOf": [schema, dict(VARIABLE)]}

        def int_schema(self, schema: Any) -> dict[str, Any]:
            return self._or_variable(super().int_schema(schema))

        def float_schema(self, schema: Any) -> dict[str, Any]:
            return self._or_variable(super().float_schema(schema))

        def bool_schema(self, schema: Any) -> dict[str, Any]:
            return self._or_variable(super().bool_schema(schema))

        def literal_schema(self, schema: Any) -> dict[str, Any]:
            return self._or_variable(super().literal_schema(schema))

        def str_schema(self, schema: Any) -> dict[str, Any]:
            out = super().str_schema(schema)
            return self._or_variable(out) if "pattern" in out else out

    body = Job.model_json_schema(by_alias=True, schema_generator=JobFileSchema)
    body["title"] = "copyjob job file"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **body}
