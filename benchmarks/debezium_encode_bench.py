"""Micro-benchmark of the CDC publish encoding: µs per change event, event by event against whole batches.

    .venv/bin/python -m benchmarks.debezium_encode_bench [--events 100000] [--batch 1000] [--repeat 3]

The events are the orders table's (benchmarks/kafka_bench.py: id bigint, customer_id int, amount
numeric(12,2), status text, updated_at timestamptz) as the PostgreSQL capture makes them: inserts in
1,000-row transactions (one commit LSN and time each), and single-row updates (``before`` null, as under the
default replica identity). Each encoder runs over the same events in batches of ``--batch``:

- *event by event*: ``encode_key`` and ``encode_value`` per event (apply/topic_sink.py's fallback path);
- *batch*: ``connectors.kafka.change_encode.encode_changes`` (for ``debezium``: column-wise since issue 11);
- ``json`` and ``avro`` batches for reference, measured in the same run.

The best of ``--repeat`` runs is reported (the machine is shared); no broker, no source: encoding only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import time
from collections.abc import Callable, Sequence
from typing import Any

from copyjob.connectors.kafka import debezium
from copyjob.connectors.kafka.change_encode import encode_changes
from copyjob.connectors.kafka.codec import Encoder, SourceInfo, TableEncoder
from copyjob.connectors.kafka.debezium import DebeziumOptions
from copyjob.connectors.kafka.memory import MemoryTransport

from copyjob.core.changes import ChangeEvent
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

SCHEMA = TableSchema(TableName("orders", "public"), (
    Column("id", LogicalType("int64"), nullable=False, native_type="bigint"),
    Column("customer_id", LogicalType("int32"), nullable=False, native_type="integer"),
    Column("amount", LogicalType("decimal", 12, 2), native_type="numeric(12,2)"),
    Column("status", LogicalType("string"), native_type="text"),
    Column("updated_at", LogicalType("timestamptz"), nullable=False, native_type="timestamp with time zone"),
), ("id",))
INFO = SourceInfo("postgresql", "shop", "public", "orders")
TS = 1_767_348_000_123
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _row(i: int, status: str) -> dict[str, Any]:
    return {"id": i, "customer_id": i % 1000, "amount": decimal.Decimal(i % 100_000).scaleb(-2), "status": status,
            "updated_at": START + dt.timedelta(microseconds=i)}


def inserts(n: int, per_txn: int = 1000) -> list[ChangeEvent]:
    lsn = 0x1_6000_0000
    return [ChangeEvent("c", None, _row(i, "new"), {"lsn": lsn + (i // per_txn) * 4096, "seq": i % per_txn},
                        TS - 60_000 + i // per_txn) for i in range(n)]


def updates(n: int) -> list[ChangeEvent]:
    lsn = 0x2_6000_0000
    return [ChangeEvent("u", None, _row(i % 100_000, "upd"), {"lsn": lsn + i * 256, "seq": 0}, TS - 60_000 + i)
            for i in range(n)]


def per_event(enc: TableEncoder, events: Sequence[ChangeEvent]) -> None:
    for e in events:
        enc.encode_key(e.row)
        enc.encode_value(e, INFO)


def per_batch(enc: TableEncoder, events: Sequence[ChangeEvent]) -> None:
    if encode_changes(enc, events, INFO, TS) is None:
        raise SystemExit(f"{enc.format}: the batch path declined the benchmark's events")


def measure(run: Callable[[TableEncoder, Sequence[ChangeEvent]], None], enc: TableEncoder,
            events: list[ChangeEvent], batch: int, repeat: int) -> float:
    """Best µs per event (CPU time of this process) over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for at in range(0, len(events), batch):
            run(enc, events[at:at + batch])
        best = min(best, time.process_time() - started)
    return best / len(events) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    debezium._now_ms = lambda: TS  # the event path's clock, as the batch's
    workloads = {"inserts": inserts(args.events), "updates": updates(args.events)}
    encoders = {
        "debezium": Encoder("debezium", MemoryTransport(), DebeziumOptions(name="shop")),
        "debezium, schemas off": Encoder("debezium", MemoryTransport(), DebeziumOptions(name="shop", schemas=False)),
        "json": Encoder("json", MemoryTransport()),
        "avro": Encoder("avro", MemoryTransport()),
    }
    print(f"{args.events:,} events per workload, batches of {args.batch:,}, best of {args.repeat}, "
          "CPU µs per event\n")
    print("| format | workload | event by event | batch | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, encoder in encoders.items():
        enc = encoder.for_table("shop.public.orders", SCHEMA, ("id",))
        for workload, events in workloads.items():
            slow = measure(per_event, enc, events, args.batch, args.repeat)
            fast = measure(per_batch, enc, events, args.batch, args.repeat)
            print(f"| {name} | {workload} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
