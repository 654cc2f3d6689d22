"""Which columns ``copyjob verify`` compares and how: each source column with its destination column (the job's
``columns:`` renames applied), hashed in SQL on both sides when both systems spell its canonical text in SQL,
else fetched and hashed in Python on both sides (the text is defined in ``connectors/_canonical.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from copyjob.core.contracts import DigestColumn, RowDigests
from copyjob.core.errors import ConfigurationError
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema


@dataclass(frozen=True)
class ColumnPlan:
    source: tuple[DigestColumn, ...]
    destination: tuple[DigestColumn, ...]
    key_source: tuple[str, ...]
    key_destination: tuple[str, ...]
    in_python: tuple[str, ...]
    """Destination names of the columns hashed in Python."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.destination]

    def key_positions(self) -> list[int]:
        names = self.names
        return [names.index(k) for k in self.key_destination]


def column_plan(plan: TablePlan, found: TableSchema, source: RowDigests, destination: RowDigests) -> ColumnPlan:
    """Pair the plan's source columns with the destination table ``found`` (as reflected)."""
    pairs: list[tuple[DigestColumn, DigestColumn]] = []
    for src, dst_name in zip(plan.source_schema.columns, plan.target_schema.column_names, strict=True):
        dst = found.column(dst_name)
        if dst is None:
            raise ConfigurationError(f"{plan.label}: column {dst_name!r} is missing in the destination table")
        a = DigestColumn(src.name, src.type, src)
        b = DigestColumn(dst.name, src.type, dst)
        in_sql = source.can_canonicalise(a) and destination.can_canonicalise(b)
        pairs.append((DigestColumn(a.name, a.want, a.have, in_sql), DigestColumn(b.name, b.want, b.have, in_sql)))
    renames = dict(zip(plan.source_schema.column_names, plan.target_schema.column_names, strict=True))
    key_source = tuple(plan.source_key)
    return ColumnPlan(
        source=tuple(p[0] for p in pairs), destination=tuple(p[1] for p in pairs), key_source=key_source,
        key_destination=tuple(renames.get(k, k) for k in key_source),
        in_python=tuple(p[1].name for p in pairs if not p[1].in_sql))


def integer_key(plan: ColumnPlan) -> bool:
    """A single integer key column on both sides: ranges are cut by value."""
    if len(plan.key_source) != 1:
        return False
    names = [c.name for c in plan.source]
    src = plan.source[names.index(plan.key_source[0])]
    dst = plan.destination[names.index(plan.key_source[0])]
    ints = ("int16", "int32", "int64")
    return src.have.type.kind in ints and dst.have.type.kind in ints


def keyed_columns(columns: Sequence[DigestColumn], key: Sequence[str]) -> list[DigestColumn]:
    return [c for c in columns if c.name in key]


def same_native_types(plan: ColumnPlan, source: RowDigests, destination: RowDigests) -> bool:
    """Both sides one system (and version) with a fast native row hash, every column of the same native type:
    the rows' own text is then the same on both sides and cheaper to hash than the canonical text."""
    native = source.native_hash(plan.source)
    return native is not None and native == destination.native_hash(plan.destination) and all(
        a.have.native_type and a.have.native_type == b.have.native_type
        for a, b in zip(plan.source, plan.destination, strict=True))
