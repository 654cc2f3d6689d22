"""Legal Kafka topic names, the way Debezium makes them (its ``TopicNamingStrategy``): every character outside
``[a-zA-Z0-9._-]`` becomes ``_``, so ``CRM."Mixed Case"`` publishes to ``<prefix>.CRM.Mixed_Case``. A name
longer than Kafka's 249 characters keeps its start and ends with a hash of the whole name, so it stays the same
from run to run and tells long names apart.

Two tables can map to one topic (``a b`` and ``a_b``); so can names that differ only in ``.`` versus ``_``,
which Kafka refuses as colliding. :func:`collision_key` is what the job loader compares to refuse such a job.
Nothing maps a topic back to a table by parsing its name: each side computes the topic from the job file.
"""

from __future__ import annotations

import hashlib
import re

MAX_TOPIC_LENGTH = 249
"""Kafka's limit (``Topic.MAX_NAME_LENGTH``)."""
_INVALID = re.compile(r"[^a-zA-Z0-9._-]")
_HASH_LENGTH = 16


def legal_topic(name: str, suffix: str = "") -> str:
    """``name`` with every character Kafka refuses replaced by ``_``, shortened when it and ``suffix`` (legal,
    kept whole: ``.dlq``) are over 249 characters."""
    legal = _INVALID.sub("_", name)
    if not suffix and legal in ("", ".", ".."):  # the only names of legal characters Kafka still refuses
        legal = legal.replace(".", "_") or "_"
    room = MAX_TOPIC_LENGTH - len(suffix)
    if len(legal) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
        legal = f"{legal[:room - _HASH_LENGTH - 1]}_{digest}"
    return legal + suffix


def collision_key(topic: str) -> str:
    """Topics with the same key collide: Kafka's metric names turn ``.`` into ``_``, so it refuses ``a.b``
    next to ``a_b``."""
    return topic.replace(".", "_")
