"""Writes batches into destinations with append, overwrite or merge, committed with their state.

The sinks live here too: a CDC run's (:mod:`.cdc_table` the contract, :mod:`.destination_sink` into the
destination, :mod:`.topic_sink` onto Kafka topics) and the Kafka apply consumer (:mod:`.kafka_apply`, with
:mod:`.dead_letters` and :mod:`.write_behind`)."""

from copyjob.apply.target import PreparedTarget, prepare_target
from copyjob.apply.writer import WriteResult, write_batches, write_binary

__all__ = ["PreparedTarget", "WriteResult", "prepare_target", "write_batches", "write_binary"]
