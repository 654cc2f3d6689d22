"""Encoding change events into Kafka messages and decoding them back, in the three formats.

- ``avro`` without a registry: Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + datum); the
  schema is published to ``<prefix>._schemas`` keyed by its fingerprint (see :mod:`connectors.kafka.schemas`).
- ``avro`` with ``schema_registry_url``: the Confluent wire format (``00`` + 4-byte big-endian schema id +
  datum), schemas registered under the subjects ``<topic>-key`` and ``<topic>-value``.
- ``json``: the Debezium JSON envelope (payload only, UTF-8); the key is a JSON object of the key columns. The
  header ``copyjob.core.schema`` names the fingerprint of the Avro schema of the same version in the schema topic,
  so decoders can restore exact types (decimals, timestamps).
- ``debezium``: Kafka Connect JSON exactly as Debezium's connectors write it, schemas inline
  (:mod:`connectors.kafka.debezium`); nothing is registered.

A message whose value is null is a tombstone: it follows every delete so compacted topics forget the key.
"""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from copyjob.connectors.kafka import avro
from copyjob.connectors.kafka.debezium import DebeziumOptions, DebeziumTable
from copyjob.connectors.kafka.debezium_transactions import Transactions, transaction_topic
from copyjob.connectors.kafka.values import json_row_parser, to_json_value

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent
from copyjob.core.errors import ConnectorError
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

Format = Literal["avro", "json", "debezium"]
SCHEMA_HEADER = "copyjob.core.schema"
UNCHANGED_HEADER = "copyjob.unchanged"
"""A JSON list of the columns whose value an update left unchanged and the source did not log (PostgreSQL's
TOASTed values): null in ``after``, and the apply side keeps the destination's value."""

CONFLUENT_MAGIC = b"\x00"


def unchanged_columns(headers: Sequence[tuple[str, bytes | None]]) -> list[str] | None:
    """The columns a message's ``copyjob.unchanged`` header names, or None."""
    for name, value in headers:
        if name == UNCHANGED_HEADER and value:
            found: list[str] = json.loads(value)
            return found
    return None


class Registrar(Protocol):
    """Where an encoder makes a schema known before its first message (schema topic or registry)."""

    def register(self, subject: str, schema_json: str) -> bytes:
        """Make the schema known; returns the prefix of every datum written with it."""


class Lookup(Protocol):
    """Where a decoder finds the writer's schema of a message."""

    def by_fingerprint(self, fp: int) -> str | None: ...

    def by_id(self, schema_id: int) -> str | None: ...


@dataclass(frozen=True)
class SourceInfo:
    """The ``source`` block of the envelope, without the per-event fields."""

    connector: str
    db: str
    schema: str | None
    table: str

    def block(self, snapshot: bool, position: Mapping[str, Any], ts_ms: int) -> dict[str, Any]:
        return {"connector": self.connector, "db": self.db, "schema": self.schema, "table": self.table,
                "snapshot": "true" if snapshot else "false",
                "position": json.dumps(dict(position), sort_keys=True, default=str), "ts_ms": ts_ms}


def now_ms() -> int:
    return int(time.time() * 1000)


def _clean(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (None if v is UNCHANGED_TOAST else v) for k, v in row.items()}


@dataclass
class TableEncoder:
    """Encodes one table's events with one schema version."""

    topic: str
    schema: TableSchema
    key: tuple[str, ...]
    format: Format
    value_prefix: bytes = b""
    key_prefix: bytes = b""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    _value_parsed: Any = None
    _key_parsed: Any = None
    _field_names: dict[str, str] = field(default_factory=dict)
    _debezium: DebeziumTable | None = None

    def encode_key(self, row: Mapping[str, Any] | None, *, truncate: bool = False) -> bytes | None:
        """``truncate``: the key of a truncate event (every column null; only ``debezium`` marks it)."""
        if self._debezium is not None:
            return self._debezium.encode_key(row, truncate=truncate)
        if not self.key or row is None:
            return None
        values = {k: row.get(k) for k in self.key}
        if self.format == "json":
            return json.dumps({k: to_json_value(v) for k, v in values.items()}, default=str).encode()
        return self.key_prefix + self._datum(self._key_parsed, self._avro_row(values))

    def encode_value(self, event: ChangeEvent, source: SourceInfo,
                     transaction: Mapping[str, Any] | None = None) -> bytes:
        """``transaction``: the event's ``transaction`` block (``debezium`` with transaction metadata)."""
        if self._debezium is not None:
            return self._debezium.encode_value(event, source, transaction=transaction)
        ts = now_ms()
        block = source.block(event.snapshot or event.op == "r", event.position, event.ts_ms or ts)
        before, after = _clean(event.before), _clean(event.after)
        if self.format == "json":
            doc = {"before": _json_row(before), "after": _json_row(after), "op": event.op, "source": block,
                   "ts_ms": ts}
            return json.dumps(doc, default=str).encode()
        datum = {"before": self._avro_row(before), "after": self._avro_row(after), "op": event.op,
                 "source": block, "ts_ms": ts}
        return self.value_prefix + self._datum(self._value_parsed, datum)

    def encode_rows(self, batch: pa.RecordBatch, op: str, source: SourceInfo,
                    position: Mapping[str, Any]) -> Iterator[tuple[bytes | None, bytes]]:
        """Every row of an Arrow batch as an event ``op`` (snapshot ``r`` or ``u``): (key, value) pairs."""
        keys, values = self.encode_batch(batch, op, source, position)
        return zip(keys, values, strict=True)

    def encode_batch(self, batch: pa.RecordBatch, op: str, source: SourceInfo,
                     position: Mapping[str, Any], *, last: bool = False) -> tuple[list[bytes | None], list[bytes]]:
        """Keys and values of every row of ``batch`` as events ``op``: Avro column-wise for the whole batch
        (:mod:`connectors.kafka.batch_encode`), else (JSON, a column that path cannot do) row by row.
        ``last``: the batch ends a table's snapshot (``debezium`` marks its last row ``snapshot: last``)."""
        if self._debezium is not None:
            return self._debezium.encode_batch(batch, op, source, position, last=last)
        ts = now_ms()
        if self.format == "avro" and batch.num_rows:
            fast = self._encode_vectorised(batch, op, source, position, ts)
            if fast is not None:
                return fast
        keys: list[bytes | None] = []
        values: list[bytes] = []
        for row in batch.to_pylist():
            event = ChangeEvent(op=op, before=None, after=row, position=position, ts_ms=ts,  # type: ignore[arg-type]
                                snapshot=op == "r")
            keys.append(self.encode_key(row))
            values.append(self.encode_value(event, source))
        return keys, values

    def _encode_vectorised(self, batch: pa.RecordBatch, op: str, source: SourceInfo, position: Mapping[str, Any],
                           ts: int) -> tuple[list[bytes | None], list[bytes]] | None:
        from copyjob.connectors.kafka import batch_encode

        parts = batch_encode.encode_columns(batch, self.schema.columns)
        if parts is None:
            return None
        # before = null (branch 0), after = Value (branch 1); op, source and ts_ms are the same for every row:
        # fastavro writes them once, from an envelope whose images are both null (the first two bytes)
        block = source.block(op == "r", position, ts)
        tail = self._datum(self._value_parsed, {"before": None, "after": None, "op": op, "source": block,
                                                "ts_ms": ts})[2:]
        values = batch_encode.join_rows(parts, self.value_prefix + b"\x00\x02", tail).to_pylist()
        if not self.key:
            return [None] * batch.num_rows, values
        index = {c.name: i for i, c in enumerate(self.schema.columns)}
        key_parts = [parts[index[k]] for k in self.key if k in index]  # as avro.key_schema
        keys = batch_encode.join_rows(key_parts, self.key_prefix).to_pylist()
        return keys, values

    def _avro_row(self, row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if row is None or not self._field_names:
            return dict(row) if row is not None else None
        return {self._field_names.get(k, k): v for k, v in row.items()}

    @staticmethod
    def _datum(parsed: Any, datum: Any) -> bytes:
        from fastavro import schemaless_writer

        out = io.BytesIO()
        try:
            schemaless_writer(out, parsed, datum)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConnectorError(f"cannot encode a value as Avro: {exc}") from exc
        return out.getvalue()


def _json_row(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: to_json_value(v) for k, v in row.items()}


EPOCH_HEADER = "copyjob.epoch"
"""On every event of a table that started over after an edit of the job file: its epoch (offsets.ledger)."""


class Encoder:
    """Builds (and caches) a :class:`TableEncoder` per topic and schema version, registering each schema once."""

    def __init__(self, format: Format, registrar: Registrar, debezium: DebeziumOptions | None = None) -> None:
        """``debezium``: the options of ``format: debezium`` (defaults when None)."""
        self.format = format
        self._registrar = registrar
        self.debezium = debezium or DebeziumOptions()
        self.transactions: Transactions | None = None
        """Debezium's transaction metadata, when asked for: BEGIN/END records on :attr:`transaction_topic`."""
        if format == "debezium" and self.debezium.transaction_metadata:
            self.transactions = Transactions(self.debezium.schemas)
        self.transaction_topic = transaction_topic(self.debezium.name)
        self._cache: dict[tuple[str, TableSchema, tuple[str, ...]], TableEncoder] = {}
        self.epochs: dict[str, str] = {}
        """Per topic, the table's epoch when it has one: its events carry it in :data:`EPOCH_HEADER`."""

    def for_table(self, topic: str, schema: TableSchema, key: Sequence[str]) -> TableEncoder:
        epoch = self.epochs.get(topic)
        if not epoch:
            return self._for_table(topic, schema, key)
        cache_key = (f"{topic}\0{epoch}", schema, tuple(key))
        found = self._cache.get(cache_key)
        if found is None:
            found = self._cache[cache_key] = copy.copy(self._for_table(topic, schema, key))
            found.headers = [*found.headers, (EPOCH_HEADER, epoch.encode())]
        return found

    def _for_table(self, topic: str, schema: TableSchema, key: Sequence[str]) -> TableEncoder:
        cache_key = (topic, schema, tuple(key))
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        if self.format == "debezium":
            enc = TableEncoder(topic=topic, schema=schema, key=tuple(key), format=self.format)
            enc._debezium = DebeziumTable(topic, schema, tuple(key), self.debezium)
            self._cache[cache_key] = enc
            return enc
        value_schema = avro.envelope_schema(topic, schema)
        value_json = json.dumps(value_schema, sort_keys=True)
        enc = TableEncoder(topic=topic, schema=schema, key=tuple(key), format=self.format)
        enc._field_names = {c.name: f["name"] for c, f in zip(schema.columns, avro.table_record(value_schema)
                                                             ["fields"], strict=True) if c.name != f["name"]}
        if self.format == "json":
            fp = avro.fingerprint(value_json)
            self._registrar.register(f"{topic}-value", value_json)
            enc.headers = [(SCHEMA_HEADER, f"{fp:016x}".encode())]
        else:
            enc.value_prefix = self._registrar.register(f"{topic}-value", value_json)
            enc._value_parsed = avro.parsed(value_json)
            if key:
                key_json = json.dumps(avro.key_schema(topic, schema, tuple(key)), sort_keys=True)
                enc.key_prefix = self._registrar.register(f"{topic}-key", key_json)
                enc._key_parsed = avro.parsed(key_json)
        self._cache[cache_key] = enc
        return enc


def job_encoder(settings: Any, registrar: Registrar, prefix: str, connector: str) -> Encoder:
    """The encoder of a job's ``kafka:`` section (copyjob.jobfile.KafkaSettings); ``prefix``: its topics'
    (Debezium's logical name), ``connector``: the source URL's scheme."""
    return Encoder(settings.format, registrar, DebeziumOptions.of(settings.debezium, prefix, connector)
                   if settings.format == "debezium" else None)


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecodedMessage:
    """One decoded message. ``op`` is None for a tombstone (a null value after a delete)."""

    op: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]
    ts_ms: int | None
    key: dict[str, Any] | None = None
    schema: TableSchema | None = None
    """The table schema of the writer's version (None for JSON messages whose schema is unknown)."""
    schema_ref: str | None = None
    """``fp:<hex>`` (single-object or JSON header) or ``id:<n>`` (registry)."""

    @property
    def position(self) -> dict[str, Any]:
        raw = self.source.get("position")
        return json.loads(raw) if isinstance(raw, str) and raw else {}

    def to_event(self) -> ChangeEvent:
        """The copyjob change event (raises on a tombstone)."""
        if self.op is None:
            raise ConnectorError("a tombstone carries no change event")
        return ChangeEvent(op=self.op, before=self.before, after=self.after,  # type: ignore[arg-type]
                           position=self.position, ts_ms=int(self.source.get("ts_ms") or self.ts_ms or 0),
                           snapshot=self.source.get("snapshot") == "true")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: key, op, before, after, source, ts_ms (nested values stay JSON objects and lists)."""
        return {"key": _json_tree(self.key), "op": self.op, "before": _json_tree(self.before),
                "after": _json_tree(self.after), "source": _json_tree(self.source), "ts_ms": self.ts_ms}


def is_connect_envelope(doc: Any) -> bool:
    """``{"schema": {...}, "payload": ...}``: a key or value as Kafka Connect's JsonConverter writes it with
    ``schemas.enable``."""
    return isinstance(doc, dict) and set(doc) == {"schema", "payload"} and isinstance(doc["schema"], dict)


def _json_tree(value: Any) -> Any:
    """``value`` as JSON: mappings and sequences stay objects and arrays (not their Python repr)."""
    if isinstance(value, Mapping):
        return {str(k): _json_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_tree(v) for v in value]
    return to_json_value(value)


class Decoder:
    """Decodes messages of any of the three formats, finding writers' schemas through ``lookup``."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._readers: dict[str, _AvroReader] = {}

    def decode(self, value: bytes | None, key: bytes | None = None,
               headers: Sequence[tuple[str, bytes | None]] | None = None) -> DecodedMessage:
        decoded_key = self._decode_key(key) if key else None
        if value is None:
            return DecodedMessage(op=None, before=None, after=None, source={}, ts_ms=None, key=decoded_key)
        if value[:2] == avro.SINGLE_OBJECT_MAGIC:
            reader = self._reader_fp(int.from_bytes(value[2:10], "little"))
            doc = reader.read(value[10:])
        elif value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            reader = self._reader_id(int.from_bytes(value[1:5], "big"))
            doc = reader.read(value[5:])
        else:
            return self._decode_json(value, decoded_key, headers)
        return DecodedMessage(op=doc["op"], before=doc["before"], after=doc["after"], source=doc["source"],
                              ts_ms=doc.get("ts_ms"), key=decoded_key, schema=reader.table, schema_ref=reader.ref)

    def writer(self, value: bytes) -> tuple[TableSchema, int] | None:
        """The table schema an Avro envelope was written with and the length of its prefix (the datum starts
        there); None for JSON or a key schema. Raises like :meth:`decode` for an unknown schema."""
        if value[:2] == avro.SINGLE_OBJECT_MAGIC:
            reader, start = self._reader_fp(int.from_bytes(value[2:10], "little")), 10
        elif value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            reader, start = self._reader_id(int.from_bytes(value[1:5], "big")), 5
        else:
            return None
        return (reader.table, start) if reader.table is not None else None

    def _decode_key(self, key: bytes) -> dict[str, Any] | None:
        if key[:2] == avro.SINGLE_OBJECT_MAGIC:
            return self._reader_fp(int.from_bytes(key[2:10], "little")).read_row(key[10:])
        if key[:1] == CONFLUENT_MAGIC and len(key) >= 5:
            return self._reader_id(int.from_bytes(key[1:5], "big")).read_row(key[5:])
        try:
            loaded = json.loads(key)
        except ValueError:
            return {"_raw": key.hex()}
        if is_connect_envelope(loaded):  # Kafka Connect's JsonConverter with schemas enabled
            loaded = loaded["payload"]
        return loaded if isinstance(loaded, dict) else {"_key": loaded}

    def _decode_json(self, value: bytes, key: dict[str, Any] | None,
                     headers: Sequence[tuple[str, bytes | None]] | None) -> DecodedMessage:
        try:
            doc = json.loads(value)
        except ValueError as exc:
            raise ConnectorError(f"not a copyjob message (neither Avro nor JSON): {value[:20]!r}") from exc
        if isinstance(doc, dict) and "payload" in doc and "op" not in doc:
            doc = doc["payload"]  # Debezium's JsonConverter with schemas enabled
        ref = next((v.decode() for k, v in headers or () if k == SCHEMA_HEADER and v), None)
        table = None
        if ref is not None:
            text = self._lookup.by_fingerprint(int(ref, 16))
            if text is not None:
                table = avro.table_schema(json.loads(text))
        parse = json_row_parser(table) if table is not None else (lambda r: dict(r) if r is not None else None)
        return DecodedMessage(op=doc.get("op"), before=parse(doc.get("before")), after=parse(doc.get("after")),
                              source=doc.get("source") or {}, ts_ms=doc.get("ts_ms"), key=key, schema=table,
                              schema_ref=f"fp:{ref}" if ref else None)

    def _reader_fp(self, fp: int) -> _AvroReader:
        ref = f"fp:{fp:016x}"
        if ref not in self._readers:
            text = self._lookup.by_fingerprint(fp)
            if text is None:
                raise ConnectorError(f"unknown Avro schema fingerprint {fp:016x} (not in the schema topic)")
            self._readers[ref] = _AvroReader(text, ref)
        return self._readers[ref]

    def _reader_id(self, schema_id: int) -> _AvroReader:
        ref = f"id:{schema_id}"
        if ref not in self._readers:
            text = self._lookup.by_id(schema_id)
            if text is None:
                raise ConnectorError(f"unknown schema id {schema_id} (not in the schema registry)")
            self._readers[ref] = _AvroReader(text, ref)
        return self._readers[ref]


class _AvroReader:
    """One writer schema: decodes datums and restores column names and uuid strings."""

    def __init__(self, text: str, ref: str) -> None:
        doc = json.loads(text)
        self.ref = ref
        self.text = text
        self.parsed = avro.parsed(text)
        self._integers: Any = None
        self.is_envelope = doc.get("name") == "Envelope"
        self.table = avro.table_schema(doc) if self.is_envelope else None
        self._names = avro.column_names(doc)
        record = avro.table_record(doc)
        self._uuids = [f["name"] for f in record["fields"] if f.get("copyjob.type") == "uuid"]

    def read(self, payload: bytes) -> dict[str, Any]:
        from fastavro import schemaless_reader

        try:
            try:
                doc: dict[str, Any] = schemaless_reader(io.BytesIO(payload), self.parsed, None)  # type: ignore[assignment]
            except (ValueError, OverflowError):
                # a date, time or timestamp Python cannot hold (infinity, BC, 24:00): the same datum with
                # those fields as the integers Arrow stores for them (see copyjob.core.temporal)
                doc = schemaless_reader(io.BytesIO(payload), self._integer_temporals(), None)  # type: ignore[assignment]
        except (EOFError, ValueError, IndexError, OverflowError) as exc:
            raise ConnectorError(f"cannot decode an Avro message ({self.ref}): {exc}") from exc
        doc["before"] = self._row(doc.get("before"))
        doc["after"] = self._row(doc.get("after"))
        return doc

    def _integer_temporals(self) -> Any:
        if self._integers is None:
            self._integers = avro.parsed(json.dumps(_without_temporal_logical_types(json.loads(self.text))))
        return self._integers

    def read_row(self, payload: bytes) -> dict[str, Any] | None:
        from fastavro import schemaless_reader

        return self._row(schemaless_reader(io.BytesIO(payload), self.parsed, None))  # type: ignore[arg-type]

    def _row(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        for name in self._uuids:
            if row.get(name) is not None:
                row[name] = str(row[name])
        if self._names:
            row = {self._names.get(k, k): v for k, v in row.items()}
        return row


_TEMPORAL_LOGICAL_TYPES = {"date", "time-micros", "time-millis", "timestamp-micros", "timestamp-millis",
                           "local-timestamp-micros", "local-timestamp-millis"}


def _without_temporal_logical_types(node: Any) -> Any:
    """An Avro schema (as JSON) whose date, time and timestamp types are their plain int/long: fastavro then
    hands out the days and microseconds since the epoch (since midnight) themselves."""
    if isinstance(node, list):
        return [_without_temporal_logical_types(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("logicalType") in _TEMPORAL_LOGICAL_TYPES:
        return {k: v for k, v in node.items() if k != "logicalType"}
    return {k: _without_temporal_logical_types(v) for k, v in node.items()}
