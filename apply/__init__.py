"""Writes batches into destinations with append, overwrite or merge, committed with their state."""

from copyjob.apply.target import PreparedTarget, prepare_target
from copyjob.apply.writer import WriteResult, write_batches, write_binary

__all__ = ["PreparedTarget", "WriteResult", "prepare_target", "write_batches", "write_binary"]
