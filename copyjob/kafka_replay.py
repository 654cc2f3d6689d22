"""``copyjob replay``: rebuild a destination table from its topic.

A compacted topic holds the latest event of every live key, so reading it from the beginning rebuilds the table.
Only merge tables can be replayed (an append table's history is not kept by a compacted topic). Steps:
1. note where to stop in each partition: its end, or the first message published after ``--to-timestamp``;
2. apply the topic from the beginning into a fresh table ``<table>__replay`` (emptied first);
3. replace the table's contents with the fresh table's in one destination transaction (overwrite);
4. move the table's partition markers to the stop offsets, so apply consumers go on from there;
5. empty ``<table>__replay`` (copyjob never drops tables; it stays, empty).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from copyjob.apply import prepare_target, write_batches
from copyjob.apply.kafka_apply import Applier, run_until
from copyjob.core.contracts import Destination, StateMarker
from copyjob.core.errors import UsageError
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.transport import Transport
from copyjob.filesets import endpoint_url
from copyjob.kafka_pipeline import Sides, apply_tables, open_transport
from copyjob.loader import LoadedJob

log = logging.getLogger("copyjob.kafka")
STAGING_SUFFIX = "__replay"


@dataclass
class ReplayResult:
    table: str
    events: int
    rows: int
    stop_offsets: dict[int, int]


def replay(loaded: LoadedJob, table_name: str, to_timestamp_ms: int | None, stop: threading.Event,
           transport_factory: Callable[[LoadedJob], Transport] = open_transport) -> ReplayResult:
    from copyjob.connectors import open_destination, open_source
    from copyjob.runs import new_run_id, select_tables

    (resolved,) = select_tables(loaded, [table_name])[:1]
    if resolved.update_method != "merge":
        raise UsageError(f"--table {table_name}: replay rebuilds merge tables (this one is "
                         f"{resolved.update_method}): a compacted topic keeps the latest row of each key only")
    destination_url = endpoint_url(loaded.job.destination, loaded.base_dir)  # with its options
    (table,) = apply_tables(loaded, [resolved])
    staging_name = resolved.spec.target_name + STAGING_SUFFIX
    from copyjob.connectors.kafka import dlq_topic

    staging = replace(table, table=replace(table.table, target_name=staging_name),
                      dlq=dlq_topic(loaded.topic_prefix, staging_name))
    run_id = new_run_id()
    sides = Sides(transport_factory(loaded))
    try:
        # 1. where to stop
        ends = sides.transport.end_offsets(table.topic)
        limits = ends if to_timestamp_ms is None else sides.transport.offsets_for_time(  # type: ignore[attr-defined]
            table.topic, to_timestamp_ms)
        sides.destination = destination = open_destination(destination_url)
        # 2. from the beginning into the fresh table
        _empty(destination, TableName.parse(staging_name))
        applier = Applier(loaded.job.job, [staging], sides.transport, destination, run_id,
                          f"copyjob-replay-{run_id}", loaded.topic_prefix,
                          create_tables=True, from_beginning=True,
                          limits={(table.topic, p): o for p, o in limits.items()})
        sides.applier = applier
        run_until(applier, lambda: applier.caught_up(applier.limits), stop.is_set)
        # 3. replace the table's contents
        source = open_source(destination_url)
        try:
            fresh = source.reflect(TableName.parse(staging_name))
            target_schema = TableSchema(TableName.parse(resolved.spec.target_name), fresh.columns,
                                        fresh.primary_key)
            prepare_target(destination, target_schema, create=True, defer_key=False)
            from copyjob.snapshot import read_table

            result = write_batches(
                destination, target_schema, [read_table(source, fresh)], method="overwrite",
                key=fresh.primary_key, truncate=True, deferred_key=(), progress=lambda n: None,
                marker=lambda: StateMarker(loaded.job.job, f"{table.name}#replay", run_id,
                                           {"offsets": {str(p): o for p, o in limits.items()}}))
        finally:
            source.close()
        # 4. markers of the table's partitions
        for p, offset in limits.items():
            _marker(destination, target_schema, StateMarker(loaded.job.job, table.marker_name(p), run_id,
                                                            {"offset": offset, "topic": table.topic,
                                                             "partition": p}))
        # 5. empty the fresh table
        _empty(destination, TableName.parse(staging_name))
        return ReplayResult(table=table.name, events=staging.stats.events, rows=result.rows_written,
                            stop_offsets=dict(limits))
    finally:
        sides.close()


def _empty(destination: Destination, table: TableName) -> None:
    existing = destination.reflect(table)
    if existing is not None:
        session = destination.begin_load(existing, "overwrite", ())
        try:
            session.commit(None)
        except BaseException:
            session.abort()
            raise


def _marker(destination: Destination, schema: TableSchema, marker: StateMarker) -> None:
    session = destination.begin_load(schema, "append", ())
    try:
        session.commit(marker)
    except BaseException:
        session.abort()
        raise
