"""Files as a source and a destination: local folders (``file:///dir``) and S3 prefixes (``s3://bucket/prefix``)
through ``pyarrow.fs``; CSV, JSON lines and Parquet.

- :mod:`.filesystem`: the root folder or prefix, listing by glob (``**`` recursive), atomic writes;
- :mod:`.readers`: one file as Arrow record batches, streamed; unreadable files raise BadFile (file:line);
- :mod:`.source`: :class:`FileSource`, table entries are sets of files (copied by copyjob.file_copy);
- :mod:`.destination`: :class:`FileDestination`, a folder per table, one output file per source file.
"""

from copyjob.connectors.files.destination import FileDestination
from copyjob.connectors.files.source import FileSource

__all__ = ["FileDestination", "FileSource"]
