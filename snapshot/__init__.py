"""Full loads: chunked, parallel reads of whole tables as Arrow record batches with bounded memory."""

from copyjob.snapshot.full_load import key_chunks, read_binary, read_table

__all__ = ["key_chunks", "read_binary", "read_table"]
