"""Shared by the Debezium interoperability tests: a copyjob ``format: debezium`` CDC job file, reading a topic
from its beginning until a condition holds, and the JDBC form of a test database's URL."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import copyjob, write_job
from tests.services.kafka import KafkaBroker

_ids = itertools.count()
Message = tuple[bytes | None, bytes | None]


def job_file(tmp_path: Path, broker: KafkaBroker, src: str, dst: str, table: str,
             debezium: dict[str, Any] | None = None, **kafka: Any) -> tuple[Path, str]:
    """A ``mode: cdc``, ``transport: kafka``, ``format: debezium`` job of one table; returns it and its prefix."""
    n = next(_ids)
    prefix = f"copyjob{uuid.uuid4().hex[:12]}"  # unique on the session's broker, whichever test made topics
    job = {"job": f"{prefix}_{src.rsplit('/', 1)[1]}", "source": {"url": src}, "destination": {"url": dst},
           "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
           "tables": [{"name": table}], "transport": "kafka",
           "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix, "format": "debezium",
                     "debezium": debezium or {}, **kafka}}
    return write_job(tmp_path / f"job{n}.yaml", job), prefix


def capture(job: Path) -> None:
    result = copyjob("capture", job)
    assert result.code == 0, result.output


def read_topic(broker: KafkaBroker, topic: str, enough: Callable[[list[Message]], bool],
               timeout_s: float = 120.0, describe: Callable[[list[Message]], object] = len) -> list[Message]:
    """Every message of ``topic`` from its beginning, read until ``enough`` holds for them (or the deadline);
    ``describe`` says what was found instead."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"t{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list[tuple[int, int, bytes | None, bytes | None]] = []
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(500, 1.0):
                if m.error() is None:
                    found.append((m.partition() or 0, m.offset() or 0, m.key(), m.value()))
            messages = [(k, v) for _, _, k, v in sorted(found, key=lambda f: (f[0], f[1]))]
            if enough(messages):
                return messages
    finally:
        consumer.close()
    raise TimeoutError(f"{topic}: not the messages expected after {timeout_s:.0f}s: {describe(messages)}")


def payloads(messages: list[Message]) -> list[dict[str, Any]]:
    """The payloads of the values (tombstones left out)."""
    return [json.loads(v)["payload"] for _, v in messages if v is not None]


def jdbc(url: str) -> dict[str, str]:
    """The JDBC sink's connection settings for a ``postgresql://`` URL."""
    parts = urlsplit(url)
    return {"connection.url": f"jdbc:postgresql://{parts.hostname}:{parts.port}{parts.path}",
            "connection.username": parts.username or "", "connection.password": parts.password or ""}
