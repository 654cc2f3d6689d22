"""The rows of a load until its commit: in memory while few, then in a private temporary Arrow IPC file, so that
a full copy of a large table streams into its one Delta commit with bounded memory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pyarrow as pa

SPILL_ROWS = 250_000
"""Rows kept in memory before the spool moves to a file."""


class Spool:
    def __init__(self, schema: pa.Schema, spill_rows: int | None = None) -> None:
        self.schema = schema
        self._spill_rows = SPILL_ROWS if spill_rows is None else spill_rows
        self._memory: list[pa.RecordBatch] = []
        self._in_memory = 0
        self._path: str | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if self._writer is not None:
            self._writer.write_batch(batch)
            return
        self._memory.append(batch)
        self._in_memory += batch.num_rows
        if self._in_memory > self._spill_rows:
            fd, self._path = tempfile.mkstemp(prefix="copyjob-delta-", suffix=".arrows")  # 0600
            self._writer = pa.ipc.new_stream(pa.OSFile(self._path, "wb"), self.schema)
            os.close(fd)
            for kept in self._memory:
                self._writer.write_batch(kept)
            self._memory, self._in_memory = [], 0

    def __bool__(self) -> bool:
        return bool(self._memory) or self._writer is not None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row in the order added, streamed from the file when there is one."""
        if self._writer is not None and self._path is not None:
            self._writer.close()
            self._writer = None
            with pa.OSFile(self._path, "rb") as f:
                yield from pa.ipc.open_stream(f)
            return
        yield from self._memory

    def table(self) -> pa.Table:
        """Every row, in memory (merge needs them together: the last row of each key)."""
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def replace(self, table: pa.Table) -> None:
        """The rows are now ``table`` (after a delete or update changed them), in memory."""
        self.discard()
        self._memory = table.combine_chunks().to_batches()
        self._in_memory = table.num_rows

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._path is not None:
            os.unlink(self._path)
            self._path = None
        self._memory, self._in_memory = [], 0
