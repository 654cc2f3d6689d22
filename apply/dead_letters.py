"""Dead letters of the apply side of ``transport: kafka``: an event that cannot be applied goes, unchanged, to
its table's dead-letter topic ``<prefix>.<table>.dlq`` with the error and where it came from in headers
(``copyjob.error``, ``copyjob.topic``, ``copyjob.partition``, ``copyjob.offset``). :meth:`DeadLetters.send`
returns once the broker acknowledged it, so the consumer may then commit its marker past the event (in the
destination, even while the table does not exist: ``Destination.write_marker``), and a restart does not send it
again."""

from __future__ import annotations

from copyjob.connectors.kafka import dlq_topic

from copyjob.core.transport import Record, Transport
from copyjob.core.urls import redact


class DeadLetters:
    """Sends dead letters of one job's tables through a transport (topics are created on first use)."""

    def __init__(self, transport: Transport, prefix: str) -> None:
        self.transport = transport
        self.prefix = prefix
        self._ready: set[str] = set()
        self._publisher = transport.publisher()

    def topic(self, table: str) -> str:
        return dlq_topic(self.prefix, table)

    def send(self, table: str, record: Record, exc: BaseException) -> str:
        """The original message, with the error and where it came from in headers, to ``table``'s DLQ, flushed;
        returns the error as the headers carry it."""
        topic = self.topic(table)
        if topic not in self._ready:
            self.transport.ensure_topics({topic: False})
            self._ready.add(topic)
        error = redact(f"{type(exc).__name__}: {exc}")[:2000]
        headers = [*record.headers, ("copyjob.error", error.encode()), ("copyjob.topic", record.topic.encode()),
                   ("copyjob.partition", str(record.partition).encode()),
                   ("copyjob.offset", str(record.offset).encode())]
        self._publisher.publish(topic, record.key, record.value, headers)
        self._publisher.flush()
        return error
