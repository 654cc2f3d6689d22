"""A folder or S3 prefix as a source: each table entry names a set of files (``pattern``, ``format``).

The copy itself (which files, in what order, committed how) is copyjob.file_copy's; this class lists files
and opens them.
"""

from __future__ import annotations

from collections.abc import Sequence

from copyjob.connectors.files.filesystem import Root, list_files, open_root
from copyjob.connectors.files.readers import open_reader

from copyjob.core.contracts import FileInfo, FileReader, FileSet, SourceCapabilities
from copyjob.core.errors import BadFile, ConfigurationError
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

INFER_TRIES = 3
"""How many of the newest files to try when checking a job (a bad file is the copy's business, not the check's)."""


class FileSource:
    capabilities = SourceCapabilities(files=True)

    def __init__(self, url: ConnectionUrl) -> None:
        if "format" in url.query:
            raise ConfigurationError(f"{url}: a file source's format is given per table entry (format:)")
        self.root: Root = open_root(url)

    def list_files(self, pattern: str) -> list[FileInfo]:
        return list_files(self.root, pattern)

    def infer_schema(self, files: FileSet, listed: Sequence[FileInfo]) -> TableSchema | None:
        newest = sorted(listed, key=lambda f: (f.mtime_ns, f.path), reverse=True)
        for file in newest[:INFER_TRIES]:
            try:
                reader = open_reader(self.root, files, file, None, batch_rows=1000, sample=True)
            except BadFile:
                continue
            try:
                if reader.columns:
                    return TableSchema(TableName.parse(files.name), reader.columns)
            finally:
                reader.close()
        return None

    def read_file(self, files: FileSet, file: FileInfo, known: TableSchema | None = None, *,
                  batch_rows: int = 50_000) -> FileReader:
        return open_reader(self.root, files, file, known, batch_rows=batch_rows)

    def reflect(self, table: TableName) -> TableSchema:
        raise ConfigurationError(f"{self.root.display} holds files, not tables: give {table} a pattern:")

    def table_names(self) -> list[TableName]:
        return []  # files are named by patterns

    def close(self) -> None:
        pass
