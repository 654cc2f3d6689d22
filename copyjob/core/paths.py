"""File paths: what a file's name says about its format, and how paths named in job files stay inside their
roots. A file pattern is relative to its source folder, S3 prefix or trigger folder, and may neither be
absolute nor hold a ``..`` segment: the job-file loader reports a bad pattern at its line, and the file
listing refuses it again at run time."""

from __future__ import annotations

import re

from copyjob.core.contracts import FileFormat

FORMAT_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
"""Read transparently (pyarrow detects the codec from the suffix); not for Parquet, which compresses inside."""

FOLLOW_SYMLINKS_OUTSIDE = "follow_symlinks_outside"
"""The source option (and URL query key) that lets symbolic links leading outside the source folder be read."""
_ABSOLUTE = re.compile(r"^(?:[/\\]|~(?:/|$)|[A-Za-z]:[/\\])")


def pattern_problem(pattern: str, root: str = "the source folder") -> str | None:
    """Why ``pattern`` may leave ``root`` (None when it stays inside): it is absolute or has a ``..`` segment."""
    if _ABSOLUTE.match(pattern):
        return (f"{pattern!r} is an absolute path: a pattern is relative to {root}, and stays inside it "
                "(to read another folder, point the URL at it)")
    if ".." in re.split(r"[/\\]", pattern):
        return (f"{pattern!r} leaves {root}: a pattern may not contain '..' "
                "(to read another folder, point the URL at it)")
    return None
