"""``copyjob verify --repair``: re-copy exactly the keys that differ, in one destination transaction per table.

Through the destination's own write path (``Destination.begin_load`` with ``merge``, as change capture applies
changes): the rows of the missing and differing keys are read from the source and upserted, the extra keys
deleted, and the transaction commits without a state marker, so no watermark or stream position moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from copyjob.core.contracts import Bound, Destination, RowFilter
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema


class RowSource(Protocol):
    """Where the repair reads source rows: a database source, or a file set's rows as verify loaded them."""

    def read(self, schema: TableSchema, filters: Sequence[RowFilter]) -> Iterable[Any]: ...


def repair_keys(plan: TablePlan, source: RowSource, destination: Destination, target: TableSchema,
                upsert: Sequence[tuple[Any, ...]], delete: Sequence[tuple[Any, ...]]) -> int:
    """Upsert the source rows of ``upsert`` (source key values) and delete ``delete`` (destination key values)
    in ``target``; returns the keys touched."""
    import pyarrow as pa

    from copyjob.apply.writer import renamed

    written = tuple(c.name for c in plan.source_schema.columns if not c.generated)
    source_schema = plan.source_schema.select(list(written))
    names = dict(zip(plan.source_schema.column_names, plan.target_schema.column_names, strict=True))
    target_schema = plan.target_schema.select([names[n] for n in written])
    session = destination.begin_load(target_schema, "merge", plan.key)
    try:
        for batch in renamed(_source_rows(source, source_schema, plan.source_key, upsert), target_schema):
            session.write(batch)
        if delete:
            key_fields = [target_schema.arrow_schema().field(k) for k in plan.key]
            columns = [pa.array([k[i] for k in delete], type=f.type) for i, f in enumerate(key_fields)]
            session.delete_keys(pa.RecordBatch.from_arrays(columns, schema=pa.schema(key_fields)))
        session.commit(None)
    except BaseException:
        session.abort()
        raise
    return len(upsert) + len(delete)


def _source_rows(source: RowSource, schema: TableSchema, key: Sequence[str],
                 keys: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    for values in keys:
        filters = [RowFilter(k, Bound(v, True), Bound(v, True)) for k, v in zip(key, values, strict=True)]
        yield from source.read(schema, filters)
