"""How large one message (one row or change) may be: the job's ``kafka.max_message_bytes`` (16 MiB unless set),
applied everywhere a size limit stands in the way, so that a row of a few megabytes goes through a broker left at
its defaults (whose limit is 1 MB):

- topics the job creates get ``max.message.bytes`` (a per-topic setting that overrides the broker's);
- the producer's ``message.max.bytes``; the consumers' ``receive.message.max.bytes`` (their fetch sizes stay
  small: a larger message comes alone in its fetch);
- a message still larger is refused before it is sent (:class:`MessageTooLarge`), naming the setting.

Topics that existed before keep their own ``max.message.bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from copyjob.core.errors import DataError

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
FRAMING_BYTES = 64 * 1024
"""Room for the record batch's framing and headers around the largest key and value."""
_FETCH_PARTITION_BYTES = 2**20
_FETCH_BYTES = 4 * 2**20
"""A fetch's bytes (compressed): fetching more only buys memory (every fetched message waits in librdkafka's
queue); a larger message still comes whole, alone in its fetch (KIP-74), within ``receive.message.max.bytes``."""


class MessageTooLarge(DataError):
    """A message over ``kafka.max_message_bytes``; ``index``: its position among the messages of the call."""

    def __init__(self, message: str, index: int, size: int, limit: int) -> None:
        super().__init__(message)
        self.index, self.size, self.limit = index, size, limit


def topic_config(max_message_bytes: int) -> dict[str, str]:
    return {"max.message.bytes": str(max_message_bytes + FRAMING_BYTES)}


def producer_config(max_message_bytes: int) -> dict[str, int]:
    return {"message.max.bytes": max_message_bytes + FRAMING_BYTES}


def consumer_config(max_message_bytes: int) -> dict[str, int]:
    largest = max(_FETCH_BYTES, max_message_bytes + FRAMING_BYTES)
    return {"max.partition.fetch.bytes": _FETCH_PARTITION_BYTES, "fetch.max.bytes": _FETCH_BYTES,
            "receive.message.max.bytes": largest + FRAMING_BYTES}


def check_sizes(topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None], limit: int) -> None:
    """Raise :class:`MessageTooLarge` for the first message whose key and value are over ``limit`` bytes."""
    if max(map(len, filter(None, values)), default=0) + max(map(len, filter(None, keys)), default=0) <= limit:
        return
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        size = len(key or b"") + len(value or b"")
        if size > limit:
            raise MessageTooLarge(
                f"kafka: a message for topic {topic} is {size} bytes, over kafka.max_message_bytes ({limit}): "
                f"raise kafka.max_message_bytes in the job file, or leave the large column out with columns:"
                f"{_key_text(key)}", i, size, limit)


def too_large(exc: MessageTooLarge, table: str, rows: Any, key: Sequence[str]) -> DataError:
    """``exc`` told of the row at ``exc.index`` of ``rows`` (an Arrow batch): name the table and the row's key."""
    row = rows.slice(exc.index, 1).to_pylist()[0]
    which = ", ".join(f"{k}={row.get(k)!r}" for k in key) if key else f"row {exc.index + 1} of the batch"
    return DataError(f"{table}: the row {which} is {exc.size} bytes as a Kafka message, over "
                     f"kafka.max_message_bytes ({exc.limit}): raise kafka.max_message_bytes in the job file, or "
                     "leave the large column out with columns:")


def too_large_for_topic(topic: str, size: int) -> DataError:
    """The broker refused a message as over the topic's ``max.message.bytes``: a topic made before copyjob set it,
    or by someone else."""
    return DataError(
        f"kafka: topic {topic} refused a message of {size} bytes as too large: its max.message.bytes is below "
        f"kafka.max_message_bytes; raise it (kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
        "--add-config max.message.bytes=…) or lower kafka.max_message_bytes to what the topic takes")


def _key_text(key: bytes | None) -> str:
    """The message key when it reads as text (the JSON format's keys); the caller names the row otherwise."""
    if not key:
        return ""
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return ""
    return f" (key {text[:200]})" if text.isprintable() else ""
