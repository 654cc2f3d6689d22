"""Debezium's transaction metadata (``provide.transaction.metadata``) for ``format: debezium``: BEGIN and END
records on ``<prefix>.transaction`` and the ``transaction`` block of each change event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Transactions", "transaction_id", "transaction_topic"]

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _opt(name: str, type_: str, optional: bool = True) -> dict[str, Any]:
    return {"type": type_, "optional": optional, "field": name}


def transaction_topic(prefix: str) -> str:
    """Debezium's ``<topic.prefix>.transaction``."""
    return f"{prefix}.transaction"


def transaction_id(position: Mapping[str, Any]) -> str | None:
    """What identifies a change's source transaction in copyjob's positions: PostgreSQL's commit LSN, MySQL's
    GTID or the binlog file and position of the transaction; None for a position without transactions."""
    if position.get("lsn") is not None:
        return str(position["lsn"])
    if position.get("gtid"):
        return str(position["gtid"])
    if position.get("file") and position.get("row"):
        return f"{position['file']}:{position['pos']}"
    return None


_TX_KEY = {"type": "struct", "fields": [_opt("id", "string", False)], "optional": False,
           "name": "io.debezium.connector.common.TransactionMetadataKey", "version": 1}
_TX_VALUE = {"type": "struct", "fields": [
    _opt("status", "string", False), _opt("id", "string", False), _opt("event_count", "int64"),
    {"type": "array", "items": {"type": "struct", "fields": [_opt("data_collection", "string", False),
                                                             _opt("event_count", "int64", False)],
                                "optional": True, "name": "event.collection", "version": 1},
     "optional": True, "field": "data_collections"},
    _opt("ts_ms", "int64", False)], "optional": False,
    "name": "io.debezium.connector.common.TransactionMetadataValue", "version": 1}


@dataclass
class _Open:
    id: str
    ts_ms: int
    total: int = 0
    per_collection: dict[str, int] = field(default_factory=dict)


@dataclass
class Transactions:
    """Debezium's transaction metadata (``provide.transaction.metadata``): a BEGIN record before a
    transaction's first event and an END record (event counts per table) after its last, on
    ``<prefix>.transaction``; each event's ``transaction`` block numbers it in the transaction and in its table.

    A transaction ends when an event of another one comes, or when the capture commits a chunk
    (:meth:`close`): a transaction larger than a chunk (``cdc.batch_events``) is reported as several
    BEGIN/END pairs with the same id."""

    schemas: bool = True
    _open: _Open | None = None

    def event(self, collection: str, position: Mapping[str, Any], ts_ms: int
              ) -> tuple[list[tuple[bytes, bytes]], dict[str, Any] | None]:
        """The records to publish before the event (END of the previous transaction, BEGIN of this one), and
        the event's ``transaction`` block (None when its position names no transaction)."""
        tx = transaction_id(position)
        records: list[tuple[bytes, bytes]] = []
        if self._open is not None and self._open.id != tx:
            records += self.close()
        if tx is None:
            return records, None
        if self._open is None:
            self._open = _Open(tx, ts_ms)
            records.append(self._record({"status": "BEGIN", "id": tx, "event_count": None,
                                         "data_collections": None, "ts_ms": ts_ms}))
        o = self._open
        o.total += 1
        o.per_collection[collection] = o.per_collection.get(collection, 0) + 1
        return records, {"id": tx, "total_order": o.total, "data_collection_order": o.per_collection[collection]}

    def close(self) -> list[tuple[bytes, bytes]]:
        """The END record of the open transaction, if any."""
        o, self._open = self._open, None
        if o is None:
            return []
        return [self._record({"status": "END", "id": o.id, "event_count": o.total,
                              "data_collections": [{"data_collection": name, "event_count": n}
                                                   for name, n in o.per_collection.items()],
                              "ts_ms": o.ts_ms})]

    def _record(self, value: dict[str, Any]) -> tuple[bytes, bytes]:
        key = {"id": value["id"]}
        if not self.schemas:
            return _DUMPS(key).encode(), _DUMPS(value).encode()
        return (_DUMPS({"schema": _TX_KEY, "payload": key}).encode(),
                _DUMPS({"schema": _TX_VALUE, "payload": value}).encode())
