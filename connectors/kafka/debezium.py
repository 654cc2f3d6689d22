"""``kafka.format: debezium``: change events as Kafka Connect JSON, exactly as Debezium's connectors write them.

What Connect's ``JsonConverter`` (``schemas.enable=true``) makes of a Debezium record: ``{"schema": …,
"payload": …}`` for the key (struct ``<topic>.Key``) and the value (struct ``<topic>.Envelope``, version 2, with
``before``/``after`` of struct ``<topic>.Value``, the connector's ``source`` block, ``transaction``, ``op`` and
``ts_ms``/``ts_us``/``ts_ns``); without schemas the payload alone. Compact JSON, as Jackson writes it.

Columns get Debezium's default semantic types (``time.precision.mode: adaptive``, ``decimal.handling.mode``
from the job, ``bytes`` for binary):

==============  ==========================================================================================
copyjob type    Connect schema (payload)
==============  ==========================================================================================
int16/32/64     int16 / int32 / int64
float32/64      float / double (NaN and ±Infinity as Jackson quotes them: ``"NaN"``)
bool            boolean
string          string
uuid, json      string named ``io.debezium.data.Uuid`` / ``io.debezium.data.Json``
binary          bytes (base64)
decimal(p,s)    precise: bytes ``org.apache.kafka.connect.data.Decimal`` (base64 of the big-endian two's
                complement unscaled value, as Java's ``BigInteger.toByteArray``; ``scale`` and
                ``connect.decimal.precision`` as parameters); string: its plain text; double: a number
decimal         (no precision) precise: struct ``io.debezium.data.VariableScaleDecimal`` {scale, value}; NaN
                and ±Infinity, which it cannot hold, are null as Debezium writes them
date            int32 ``io.debezium.time.Date`` (days since 1970-01-01)
time            int64 ``io.debezium.time.MicroTime`` (µs since midnight); int32 ``io.debezium.time.Time``
                (ms) for a column of precision 0-3 (``time(3)``)
timestamp       int64 ``io.debezium.time.MicroTimestamp`` (µs since the epoch); int64
                ``io.debezium.time.Timestamp`` (ms) for precision 0-3 (MySQL's plain ``datetime``)
timestamptz     string ``io.debezium.time.ZonedTimestamp``: UTC, ``Z``, the column's fractional digits (6 on
                PostgreSQL unless declared; MySQL's ``timestamp(fsp)``)
==============  ==========================================================================================

The types live in :mod:`connectors.kafka.debezium_types`, the column-wise path of whole batches in
:mod:`connectors.kafka.debezium_batch`, transaction metadata in :mod:`connectors.kafka.debezium_transactions`.

The ``source`` block is the connector's: ``io.debezium.connector.postgresql.Source`` (``lsn`` is the commit
LSN of the change's transaction, which copyjob's positions carry; ``txId``, ``xmin``, ``sequence`` and the
origin fields are null: the capture does not keep them), ``io.debezium.connector.mysql.Source`` (and
``…mariadb.Source`` for ``mariadb://``: binlog ``file``, ``pos``, ``row``, ``gtid``; ``server_id`` 0 and
``thread``/``query`` null, which copyjob's positions do not carry). Other sources get the common fields with
``schema``/``table``. ``version`` is copyjob's, ``name`` the topic prefix (Debezium's logical name).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from copyjob.connectors.kafka.debezium_types import (
    Convert,
    DecimalHandling,
    base64_text,
    column_schema,
    connect_field,
)

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent
from copyjob.core.errors import DataError
from copyjob.core.schema import Column, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DUMPS", "UNAVAILABLE", "DebeziumOptions", "DebeziumTable", "position_fields", "source_block"]

UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for a value the source did not log (an unchanged TOASTed value)."""
DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
"""Compact JSON as Jackson writes it."""
_SNAPSHOT_ENUM = {"type": "string", "optional": True, "name": "io.debezium.data.Enum", "version": 1,
                  "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,"
                                            "false,incremental"},
                  "default": "false", "field": "snapshot"}


@dataclass(frozen=True)
class DebeziumOptions:
    """The job's ``kafka.debezium`` settings and the logical name (``source.name``: the topic prefix)."""

    name: str = "copyjob"
    connector: str = "postgresql"
    """The source's system (its URL scheme): which ``source`` block, and MySQL's precision defaults."""
    schemas: bool = True
    decimal_handling: DecimalHandling = "precise"
    transaction_metadata: bool = False

    @classmethod
    def of(cls, settings: Any, name: str, connector: str) -> DebeziumOptions:
        """From the job file's ``kafka.debezium`` section (copyjob.jobfile.DebeziumSettings)."""
        return cls(name=name, connector=connector, schemas=settings.schemas,
                   decimal_handling=settings.decimal_handling,
                   transaction_metadata=settings.transaction_metadata)


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"copyjob-{version('copyjob')}"
    except PackageNotFoundError:
        return "copyjob"


# ------------------------------------------------------------------ the source block


def _common_fields() -> list[dict[str, Any]]:
    def f(name: str, type_: str, optional: bool = False) -> dict[str, Any]:
        return {"type": type_, "optional": optional, "field": name}

    return [f("version", "string"), f("connector", "string"), f("name", "string"), f("ts_ms", "int64"),
            dict(_SNAPSHOT_ENUM), f("db", "string"), f("sequence", "string", True), f("ts_us", "int64", True),
            f("ts_ns", "int64", True)]


def _opt(name: str, type_: str, optional: bool = True) -> dict[str, Any]:
    return {"type": type_, "optional": optional, "field": name}


_POSTGRES_FIELDS = [_opt("schema", "string", False), _opt("table", "string", False), _opt("txId", "int64"),
                    _opt("lsn", "int64"), _opt("xmin", "int64"), _opt("origin", "string"),
                    _opt("origin_lsn", "int64")]
_BINLOG_FIELDS = [_opt("table", "string"), _opt("server_id", "int64", False), _opt("gtid", "string"),
                  _opt("file", "string", False), _opt("pos", "int64", False), _opt("row", "int32", False),
                  _opt("thread", "int64"), _opt("query", "string")]
_OTHER_FIELDS = [_opt("schema", "string"), _opt("table", "string")]


def source_schema(connector: str) -> dict[str, Any]:
    if connector == "postgresql":
        fields, name = _POSTGRES_FIELDS, "io.debezium.connector.postgresql.Source"
    elif connector in ("mysql", "mariadb"):
        fields, name = _BINLOG_FIELDS, f"io.debezium.connector.{connector}.Source"
    else:
        fields, name = _OTHER_FIELDS, f"io.debezium.connector.{connector}.Source"
    return {"type": "struct", "fields": _common_fields() + [dict(f) for f in fields], "optional": False,
            "name": name, "version": 1, "field": "source"}


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


PositionField = Callable[[Mapping[str, Any]], Any]
_BINLOG_POSITION: dict[str, PositionField] = {
    "gtid": lambda p: p.get("gtid"), "file": lambda p: str(p.get("file") or ""),
    "pos": lambda p: int(p.get("pos") or 0), "row": lambda p: int(p.get("row") or 0)}
_POSITION_FIELDS: dict[str, dict[str, PositionField]] = {
    "postgresql": {"lsn": lambda p: _int(p.get("lsn"))}, "mysql": _BINLOG_POSITION, "mariadb": _BINLOG_POSITION}


def position_fields(connector: str) -> Mapping[str, PositionField]:
    """The ``source`` fields a change's position gives, each with how (the others are the table's, the
    snapshot flag and the times)."""
    return _POSITION_FIELDS.get(connector, {})


def source_block(connector: str, name: str, info: Any, snapshot: str, position: Mapping[str, Any],
                 ts_ms: int) -> dict[str, Any]:
    """The ``source`` payload; ``info`` is the table's codec.SourceInfo."""
    block: dict[str, Any] = {"version": _version(), "connector": connector, "name": name, "ts_ms": ts_ms,
                             "snapshot": snapshot, "db": info.db, "sequence": None, "ts_us": ts_ms * 1000,
                             "ts_ns": ts_ms * 1_000_000}
    if connector == "postgresql":
        block.update(schema=info.schema, table=info.table, txId=None, lsn=None, xmin=None, origin=None,
                     origin_lsn=None)
    elif connector in ("mysql", "mariadb"):
        block.update(table=info.table, server_id=0, gtid=None, file="", pos=0, row=0, thread=None, query=None)
    else:
        block.update(schema=info.schema, table=info.table)
    for name, value_of in position_fields(connector).items():  # in place: the fields keep their order
        block[name] = value_of(position)
    return block


# ------------------------------------------------------------------ one table


_TRANSACTION_BLOCK = {"type": "struct", "fields": [_opt("id", "string", False), _opt("total_order", "int64", False),
                                                   _opt("data_collection_order", "int64", False)],
                      "optional": True, "name": "event.block", "version": 1, "field": "transaction"}


@dataclass
class DebeziumTable:
    """Encodes one table's keys and events (one schema version) as Debezium does."""

    topic: str
    schema: TableSchema
    key: tuple[str, ...]
    options: DebeziumOptions
    _converters: list[tuple[str, Convert | None, Any]] = field(default_factory=list)
    _key_converters: list[tuple[str, Convert | None, Any]] = field(default_factory=list)
    _columns: list[tuple[Column, dict[str, Any], Convert | None]] = field(default_factory=list)
    """Per column its Connect schema and converter, for the column-wise path (connectors.kafka.debezium_batch)."""
    _value_head: bytes = b""
    _key_head: bytes = b""
    _truncate_key_head: bytes = b""
    _snapshot_at: str | None = None
    """The position of the snapshot this table publishes (its first row was marked ``first``)."""

    @property
    def connector(self) -> str:
        return self.options.connector

    @property
    def value_head(self) -> bytes:
        """``{"schema":<envelope>,"payload":`` (the value's text up to its payload)."""
        return self._value_head

    @property
    def key_head(self) -> bytes:
        return self._key_head

    @property
    def truncate_key_head(self) -> bytes:
        """A truncate's key schema: every key column optional (all are null)."""
        return self._truncate_key_head

    def column_specs(self) -> list[tuple[Column, dict[str, Any], Convert | None, Any]]:
        """Per column: its Connect schema, payload converter and the value of an unchanged TOASTed value."""
        return [(c, body, convert, unavailable) for (c, body, convert), (_, _, unavailable)
                in zip(self._columns, self._converters, strict=True)]

    def __post_init__(self) -> None:
        fields: list[dict[str, Any]] = []
        key_fields: list[dict[str, Any]] = []
        for c in self.schema.columns:
            body, convert = column_schema(c, self.connector, self.options.decimal_handling)
            # what Debezium writes for a value the source did not log (PostgreSQL's unchanged TOAST)
            unavailable = (UNAVAILABLE if body["type"] == "string" else
                           base64_text(UNAVAILABLE.encode()) if body["type"] == "bytes" else None)
            fields.append(connect_field(c, dict(body)))
            self._converters.append((c.name, convert, unavailable))
            self._columns.append((c, body, convert))
            if c.name in self.key:
                key_fields.append(connect_field(c, dict(body), optional=False))
                self._key_converters.append((c.name, convert, None))
        value = {"type": "struct", "fields": fields, "optional": True, "name": f"{self.topic}.Value"}
        envelope = {"type": "struct", "fields": [
            {**value, "field": "before"}, {**value, "field": "after"}, source_schema(self.connector),
            dict(_TRANSACTION_BLOCK), _opt("op", "string", False), _opt("ts_ms", "int64"), _opt("ts_us", "int64"),
            _opt("ts_ns", "int64")], "optional": False, "name": f"{self.topic}.Envelope", "version": 2}
        key = {"type": "struct", "fields": key_fields, "optional": False, "name": f"{self.topic}.Key"}
        truncate_key = {**key, "fields": [{**f, "optional": True} for f in key_fields]}
        self._value_head = b'{"schema":' + DUMPS(envelope).encode() + b',"payload":'
        self._key_head = b'{"schema":' + DUMPS(key).encode() + b',"payload":'
        self._truncate_key_head = b'{"schema":' + DUMPS(truncate_key).encode() + b',"payload":'

    # ------------------------------------------------------------ keys

    def encode_key(self, row: Mapping[str, Any] | None, *, truncate: bool = False) -> bytes | None:
        if not self.key or row is None:
            return None
        payload = self._image(row, self._key_converters)
        return self._wrap(self._truncate_key_head if truncate else self._key_head, payload)

    def _wrap(self, head: bytes, payload: Any) -> bytes:
        body = DUMPS(payload).encode()
        return head + body + b"}" if self.options.schemas else body

    def _image(self, row: Mapping[str, Any] | None,
               converters: Sequence[tuple[str, Convert | None, Any]]) -> dict[str, Any] | None:
        if row is None:
            return None
        out: dict[str, Any] = {}
        for name, convert, unavailable in converters:
            v = row.get(name)
            if v is UNCHANGED_TOAST:
                out[name] = unavailable
            elif v is None or convert is None:
                out[name] = v
            else:
                try:
                    out[name] = convert(v)
                except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
                    raise DataError(f"{self.schema.table}: column {name}: cannot encode {v!r} for Debezium: "
                                    f"{exc}") from exc
        return out

    # ------------------------------------------------------------ values

    def encode_value(self, event: ChangeEvent, source: Any, *, snapshot: str | None = None,
                     transaction: Mapping[str, Any] | None = None, now_ms: int | None = None) -> bytes:
        """One change event; ``snapshot`` overrides ``source.snapshot`` (``first``/``last``)."""
        ts = now_ms if now_ms is not None else _now_ms()
        marker = snapshot or ("true" if event.snapshot or event.op == "r" else "false")
        block = source_block(self.connector, self.options.name, source, marker, event.position,
                             event.ts_ms or ts)
        payload = {"before": self._image(event.before, self._converters),
                   "after": self._image(event.after, self._converters), "source": block,
                   "transaction": dict(transaction) if transaction else None, "op": event.op, "ts_ms": ts,
                   "ts_us": ts * 1000, "ts_ns": ts * 1_000_000}
        return self._wrap(self._value_head, payload)

    def encode_changes(self, events: Sequence[ChangeEvent], source: Any,
                       ts: int) -> tuple[list[bytes | None], list[bytes]] | None:
        """Keys and values of a whole change batch at once, as :meth:`encode_key` and :meth:`encode_value`
        write them with ``now_ms=ts`` (:mod:`connectors.kafka.debezium_changes`); None: event by event."""
        from copyjob.connectors.kafka.debezium_changes import debezium_changes

        return debezium_changes(self, events, source, ts)

    def encode_batch(self, batch: pa.RecordBatch, op: str, source: Any, position: Mapping[str, Any], *,
                     last: bool = False) -> tuple[list[bytes | None], list[bytes]]:
        """Every row of an Arrow batch as events ``op`` (``r``: a snapshot row). The first snapshot row this
        table publishes at ``position`` is ``snapshot: first``; with ``last`` the batch's last row is ``last``."""
        from copyjob.connectors.kafka.debezium_batch import images

        ts = _now_ms()
        rows = images(batch, self._columns, DUMPS)
        snapshot = op == "r"
        marker = "true" if snapshot else "false"
        block = source_block(self.connector, self.options.name, source, marker, position, ts)
        # the envelope around ``after`` is the same for every row: dumped once, split around the image
        head, tail = self._payload_parts(op, block, ts)
        first_at = -1
        if snapshot:
            at = DUMPS(dict(position))
            if at != self._snapshot_at and rows:
                self._snapshot_at = at
                first_at = 0
        last_at = len(rows) - 1 if snapshot and last else -1
        values = [head + row.encode() + tail for row in rows]
        for i in {first_at, last_at} - {-1}:
            h, t = self._payload_parts(op, {**block, "snapshot": "last" if i == last_at else "first"}, ts)
            values[i] = h + rows[i].encode() + t
        return self._batch_keys(batch), values

    def _batch_keys(self, batch: pa.RecordBatch) -> list[bytes | None]:
        from copyjob.connectors.kafka.debezium_batch import images

        if not self.key:
            return [None] * batch.num_rows
        key_columns = [spec for spec in self._columns if spec[0].name in self.key]
        texts = images(batch, [(replace(c, nullable=False), s, f) for c, s, f in key_columns], DUMPS)
        if not self.options.schemas:
            return [t.encode() for t in texts]
        return [self._key_head + t.encode() + b"}" for t in texts]

    def _payload_parts(self, op: str, block: Mapping[str, Any], ts: int) -> tuple[bytes, bytes]:
        rest = DUMPS({"source": block, "transaction": None, "op": op, "ts_ms": ts, "ts_us": ts * 1000,
                       "ts_ns": ts * 1_000_000}).encode()
        head = (self._value_head if self.options.schemas else b"") + b'{"before":null,"after":'
        return head, b"," + rest[1:] + (b"}" if self.options.schemas else b"")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
