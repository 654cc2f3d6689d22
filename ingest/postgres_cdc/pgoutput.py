"""Decoding pgoutput (logical replication protocol version 1) into change events.

Messages (one per XLogData payload, first byte = type): Begin ``B``, Commit ``C``, Origin ``O``, Relation
``R``, Type ``Y``, Insert ``I``, Update ``U``, Delete ``D``, Truncate ``T`` and logical decoding Message ``M``.
Tuple data holds per column ``n`` (NULL), ``u`` (unchanged TOASTed value: :data:`UNCHANGED_TOAST`), ``t``
(text, converted by the column's cached converter) or ``b`` (binary; never requested here).

Positions: every change message of a transaction gets ``{"lsn": L, "seq": i}`` where ``L`` is the LSN of the
transaction's commit record (known from its Begin) and ``i`` the index of the message within the transaction.
Transactions arrive in commit order, so ``(lsn, seq)`` orders all changes, and a consumer that stopped in the
middle of a transaction can skip exactly what it applied when the transaction is sent again. ``seq`` counts
every published change message, also those of tables the job does not copy, so it does not depend on the
job's table list.

An update that changes the key is emitted as a delete of the old key followed by an insert (as Debezium
does), so that a merge removes the old row; both events carry the message's position.

The decoder is batch-oriented: change events are appended to :attr:`PgOutputDecoder.pending` (per
relation, in order) and handed out with :meth:`take`; :meth:`decode` only returns the message type. With
``columnar=True`` a relation whose changes in the chunk are all inserts keeps them column-wise
(:mod:`.insert_columns`) and hands them out as :class:`~copyjob.core.changes.ColumnarInserts`; its first
other change turns them into events first.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from copyjob.ingest.postgres_cdc._types import TextConverter, conversion_error, text_converter
from copyjob.ingest.postgres_cdc.insert_columns import InsertColumns

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent, new_event
from copyjob.core.errors import ConnectorError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

PG_EPOCH_MS = 946_684_800_000
"""2000-01-01T00:00:00Z in milliseconds since 1970: pgoutput timestamps count microseconds from there."""

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_BEGIN = struct.Struct(">Qq").unpack_from  # final (commit) lsn, commit time; then xid
_COMMIT = struct.Struct(">BQQq").unpack_from  # flags, commit lsn, end lsn, commit time
_RELATION_HEAD = struct.Struct(">I").unpack_from
_COLUMN_TAIL = struct.Struct(">Ii").unpack_from  # type oid, typmod
_MESSAGE_HEAD = struct.Struct(">BQ").unpack_from  # flags, lsn
_decode = bytes.decode

LogicalTypeOf = Callable[[int, int], LogicalType]
"""(type oid, typmod) → logical type of a column."""


@dataclass(frozen=True, eq=False)
class Relation:
    """A table as the Relation message describes it, with a converter per column."""

    oid: int
    table: TableName
    names: tuple[str, ...]
    type_oids: tuple[int, ...]
    typmods: tuple[int, ...]
    fields: tuple[tuple[str, TextConverter], ...]
    """(column name, converter of its text value) per column."""
    schema: TableSchema
    identity: str
    """Replica identity: ``d`` default (primary key), ``f`` full, ``i`` index, ``n`` nothing."""
    key: tuple[str, ...]
    """Columns whose change makes an update a delete + insert (the job's key, else the identity columns)."""
    wanted: bool = True
    """A table of the job (others still count in ``seq`` but produce no events)."""

    def same_shape(self, other: Relation) -> bool:
        return (self.names, self.type_oids, self.typmods) == (other.names, other.type_oids, other.typmods)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


class PgOutputDecoder:
    """Stateful decoder of one replication session (relations are announced once per session)."""

    def __init__(self, logical_type: LogicalTypeOf, keys: Mapping[TableName, Sequence[str]] | None = None,
                 tables: Collection[TableName] | None = None, *, columnar: bool = False) -> None:
        """``columnar``: keep a relation's inserts column-wise while they are all its changes in the chunk."""
        self._logical_type = logical_type
        self._keys = dict(keys or {})
        self._tables = set(tables) if tables is not None else None
        self._columnar = columnar
        self.relations: dict[int, Relation] = {}
        self.pending: dict[Relation, list[ChangeEvent] | InsertColumns] = {}
        """Events decoded since the last :meth:`take`, per relation (a relation whose columns changed is a new
        one, so its events form their own batch)."""
        self.pending_count = 0
        self.in_transaction = False
        self.lsn = 0
        """Commit LSN of the current (or last) transaction."""
        self.end_lsn = 0
        """End LSN of the last commit decoded: confirming it releases everything up to that transaction."""
        self.seq = 0
        self.last: tuple[int, int] = (0, -1)
        """(lsn, seq) of the last change message decoded."""
        self.ts_ms = 0
        self.schema_changed = False
        """Set by a Relation message that changes a relation with pending events (cleared by :meth:`take`)."""
        self.message: tuple[str, bytes, int] | None = None
        """The last logical decoding message: (prefix, content, lsn)."""
        self._dispatch: dict[int, Callable[[bytes], None]] = {
            ord("B"): self._begin, ord("C"): self._commit, ord("R"): self._relation, ord("I"): self._insert,
            ord("U"): self._update, ord("D"): self._delete, ord("T"): self._truncate, ord("M"): self._message,
            ord("O"): _ignore, ord("Y"): _ignore,
        }

    # ------------------------------------------------------------ public

    def decode(self, data: bytes) -> int:
        """Decode one pgoutput message; returns its type byte (``ord('B')``, …)."""
        kind = data[0]
        handler = self._dispatch.get(kind)
        if handler is None:
            raise ConnectorError(f"unexpected pgoutput message type {chr(kind)!r}")
        handler(data)
        return kind

    @property
    def inside_last_change_transaction(self) -> bool:
        """The transaction of the last change is still open (so a chunk ending now ends inside it)."""
        return self.in_transaction and self.seq > 0

    def take(self) -> list[tuple[Relation, Sequence[ChangeEvent]]]:
        """The pending events per relation (in order of first change), and forget them."""
        out = [(relation, pending.build() if isinstance(pending, InsertColumns) else pending)
               for relation, pending in self.pending.items()]
        self.pending = {}
        self.pending_count = 0
        self.schema_changed = False
        return out

    # ------------------------------------------------------------ transactions

    def _begin(self, data: bytes) -> None:
        self.lsn, ts = _BEGIN(data, 1)
        self.ts_ms = PG_EPOCH_MS + ts // 1000
        self.seq = 0
        self.in_transaction = True

    def _commit(self, data: bytes) -> None:
        _, _lsn, self.end_lsn, _ = _COMMIT(data, 1)
        self.in_transaction = False

    def _message(self, data: bytes) -> None:
        _, lsn = _MESSAGE_HEAD(data, 1)
        prefix, pos = _cstring(data, 10)
        (length,) = _U32(data, pos)
        self.message = (prefix, data[pos + 4:pos + 4 + length], lsn)

    # ------------------------------------------------------------ relations

    def _relation(self, data: bytes) -> None:
        (oid,) = _RELATION_HEAD(data, 1)
        namespace, pos = _cstring(data, 5)
        name, pos = _cstring(data, pos)
        identity = chr(data[pos])
        (ncols,) = _U16(data, pos + 1)
        pos += 3
        names: list[str] = []
        oids: list[int] = []
        typmods: list[int] = []
        flagged: list[str] = []
        for _ in range(ncols):
            flags = data[pos]
            column, pos = _cstring(data, pos + 1)
            type_oid, typmod = _COLUMN_TAIL(data, pos)
            pos += 8
            names.append(column)
            oids.append(type_oid)
            typmods.append(typmod)
            if flags & 1 and identity != "f":
                flagged.append(column)
        table = TableName(name, namespace)
        types = [self._logical_type(o, m) for o, m in zip(oids, typmods, strict=True)]
        key = tuple(self._keys.get(table) or flagged)
        schema = TableSchema(table, tuple(Column(n, t) for n, t in zip(names, types, strict=True)),
                             tuple(k for k in key if k in names))
        fields = tuple((n, text_converter(t) or _decode) for n, t in zip(names, types, strict=True))
        relation = Relation(oid, table, tuple(names), tuple(oids), tuple(typmods), fields, schema, identity, key,
                            wanted=self._tables is None or table in self._tables)
        previous = self.relations.get(oid)
        if previous is not None and previous.same_shape(relation):
            return  # sent again (a new session, or before a truncate): keep the one pending events follow
        if previous is not None and previous in self.pending:
            self.schema_changed = True
        self.relations[oid] = relation

    def _relation_of(self, oid: int) -> Relation:
        relation = self.relations.get(oid)
        if relation is None:
            raise ConnectorError(f"pgoutput sent a change for relation {oid} before describing it")
        return relation

    # ------------------------------------------------------------ changes (the hot path)

    def _pending(self, relation: Relation, count: int) -> list[ChangeEvent]:
        pending = self.pending.get(relation)
        if pending is None:
            pending = self.pending[relation] = []
        elif isinstance(pending, InsertColumns):  # a change other than an insert: from here on, events
            pending = self.pending[relation] = pending.events()
        self.pending_count += count
        return pending

    def _position(self) -> dict[str, int]:
        position = {"lsn": self.lsn, "seq": self.seq}
        self.last = (self.lsn, self.seq)
        self.seq += 1
        return position

    def _insert(self, data: bytes) -> None:
        # the hot path of a bulk load: _relation_of and _position inlined
        relation = self.relations.get(_U32(data, 1)[0]) or self._relation_of(_U32(data, 1)[0])
        lsn, seq = self.lsn, self.seq
        self.last = (lsn, seq)
        self.seq = seq + 1
        if not relation.wanted:
            return
        pending = self.pending.get(relation)
        if pending is None:
            pending = self.pending[relation] = (InsertColumns(relation.schema, relation.fields)
                                                if self._columnar else [])
        if isinstance(pending, list):
            after, _ = _row(data, 6, relation)  # byte 5 is 'N'
            pending.append(new_event("c", None, after, {"lsn": lsn, "seq": seq}, self.ts_ms))
        else:
            pending.add(data, 6, lsn, seq, self.ts_ms)
        self.pending_count += 1

    def _update(self, data: bytes) -> None:
        relation = self._relation_of(_U32(data, 1)[0])
        position = self._position()
        if not relation.wanted:
            return
        before: dict[str, Any] | None = None
        pos = 5
        if data[pos] in (75, 79):  # 'K' old key, 'O' old row (REPLICA IDENTITY FULL)
            before, pos = _row(data, pos + 1, relation)
        after, _ = _row(data, pos + 1, relation)  # data[pos] is 'N'
        if before is not None and _key_changed(relation.key, before, after):
            self._pending(relation, 2).extend((new_event("d", before, None, position, self.ts_ms),
                                               new_event("c", None, after, position, self.ts_ms)))
            return
        self._pending(relation, 1).append(new_event("u", before, after, position, self.ts_ms))

    def _delete(self, data: bytes) -> None:
        relation = self._relation_of(_U32(data, 1)[0])
        position = self._position()
        if relation.wanted:
            before, _ = _row(data, 6, relation)  # byte 5 is 'K' or 'O'
            self._pending(relation, 1).append(new_event("d", before, None, position, self.ts_ms))

    def _truncate(self, data: bytes) -> None:
        (count,) = _U32(data, 1)
        position = self._position()
        for i in range(count):
            relation = self._relation_of(_U32(data, 6 + 4 * i)[0])  # byte 5: cascade / restart identity
            if relation.wanted:
                self._pending(relation, 1).append(new_event("t", None, None, position, self.ts_ms))


def _ignore(data: bytes) -> None:
    """Origin and Type messages: nothing to do (types are resolved by OID when a relation arrives)."""


def _key_changed(key: Sequence[str], before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    for k in key:
        old = before.get(k)
        if old is not None and old is not UNCHANGED_TOAST and old != after.get(k):
            return True
    return False


def _row(buf: bytes, pos: int, relation: Relation) -> tuple[dict[str, Any], int]:
    """TupleData at ``pos`` as a row image (column name → value), and the position after it."""
    fields = relation.fields
    if _U16(buf, pos)[0] != len(fields):
        raise ConnectorError(f"{relation.table}: a row has {_U16(buf, pos)[0]} columns, its relation "
                             f"{len(fields)}")
    pos += 2
    row: dict[str, Any] = {}
    start = pos
    try:
        for name, convert in fields:
            kind = buf[pos]
            if kind == 116:  # 't': Int32 length, then the text
                start = pos + 5
                pos = start + _U32(buf, pos + 1)[0]
                row[name] = convert(buf[start:pos])
            elif kind == 110:  # 'n'
                row[name] = None
                pos += 1
            elif kind == 117:  # 'u'
                row[name] = UNCHANGED_TOAST
                pos += 1
            else:  # 'b' (binary) is never requested
                raise ConnectorError(f"{relation.table}: unexpected pgoutput tuple data kind {chr(kind)!r}")
    except (ValueError, TypeError, ArithmeticError) as exc:
        name = fields[len(row)][0]
        raise conversion_error(relation.table, name, buf[start:pos], exc) from exc  # the value that failed
    return row, pos
