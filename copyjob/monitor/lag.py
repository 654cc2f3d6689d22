"""The CDC lag of jobs with cdc tables, and the apply consumer lag of jobs with ``transport: kafka`` or a
``kafka://`` source, sampled into memory for the page's chart, the API and the lag gauges.

One thread asks each such job's source for its replication slot's lag (:func:`copyjob.cli.cdc.cdc_status`,
the figures ``copyjob status`` shows) every ``interval_s``, and keeps the last ``keep`` samples per job. For a
kafka job it also reads, per partition of the job's table topics, the offset the apply group committed and
the high watermark (the latest reading only); for a ``kafka://`` source, the offset its destination's markers
hold instead of the group's (the destination is where it stands: copyjob.topic_source.applied_lag). A source
or broker that cannot be reached gives a sample with an ``error`` and no figures; it never stops the sampling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from copyjob.core.errors import CopyjobError
from copyjob.core.redaction import redact
from copyjob.monitor.feed import Watched

log = logging.getLogger("copyjob.monitor")

DEFAULT_INTERVAL_S = 15.0
INTERVAL_ENV = "COPYJOB_MONITOR_LAG_INTERVAL"
KEEP = 480
"""Samples kept per job: two hours at the default interval."""


def interval_from_env() -> float:
    """``COPYJOB_MONITOR_LAG_INTERVAL`` (a duration such as ``5s``), default 15 s."""
    from copyjob.jobfile import duration_from_env

    return duration_from_env(INTERVAL_ENV, DEFAULT_INTERVAL_S)


class LagSampler:
    def __init__(self, jobs: Sequence[Watched], *, interval_s: float = DEFAULT_INTERVAL_S, keep: int = KEEP,
                 on_sample: Callable[[str, dict[str, Any]], None] | None = None,
                 on_consumer_lag: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.jobs = [j for j in jobs if j.loaded.cdc_tables or _consumes(j)]
        self.interval_s = interval_s
        self._on_sample = on_sample
        self._on_consumer_lag = on_consumer_lag
        self._samples: dict[str, deque[dict[str, Any]]] = {j.name: deque(maxlen=keep) for j in self.jobs
                                                           if j.loaded.cdc_tables and not _topic_source(j)}
        self.consuming = frozenset(j.name for j in self.jobs if _consumes(j))
        """The jobs whose apply lag (Kafka partitions behind) is sampled."""
        self._latest: dict[str, dict[str, Any]] = {}
        self._consumer: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.jobs:
            self._thread = threading.Thread(target=self._loop, name="copyjob-monitor-lag", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def samples(self, job: str) -> list[dict[str, Any]] | None:
        """The job's samples, oldest first; None for a job without cdc tables."""
        with self._lock:
            found = self._samples.get(job)
            return None if found is None else list(found)

    def latest(self, job: str) -> dict[str, Any] | None:
        """The slot, its lag and warnings as of the last sample (None before the first, or without cdc)."""
        with self._lock:
            return self._latest.get(job)

    def consumer_lag(self, job: str) -> dict[str, Any] | None:
        """A kafka job's apply consumer lag per partition as of the last sample (None before it, or without
        kafka): ``{"at", "group", "partitions": [{"topic", "partition", "committed", "lag"}], "error"}``."""
        with self._lock:
            return self._consumer.get(job)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for job in self.jobs:
                if self._stop.is_set():
                    return
                self.sample(job)
            self._stop.wait(self.interval_s)

    def sample(self, job: Watched) -> None:
        if job.name in self._samples:
            self._sample_cdc(job)
        if _consumes(job):
            consumer = _applied_lag_of(job) if _topic_source(job) else _consumer_lag_of(job)
            with self._lock:
                self._consumer[job.name] = consumer
            if self._on_consumer_lag is not None:
                self._on_consumer_lag(job.name, consumer)

    def _sample_cdc(self, job: Watched) -> None:
        info = _lag_of(job)
        point = {"at": time.time(), "lag_bytes": info.get("lag_bytes"), "lag_seconds": info.get("lag_seconds"),
                 "error": info.get("error")}
        with self._lock:
            self._samples[job.name].append(point)
            self._latest[job.name] = info
        if self._on_sample is not None:
            self._on_sample(job.name, info)


def _topic_source(job: Watched) -> bool:
    from copyjob.topic_source import is_topic_source

    return is_topic_source(job.loaded.job)


def _consumes(job: Watched) -> bool:
    """The job applies from Kafka: ``transport: kafka``, or a ``kafka://`` source."""
    return job.loaded.job.transport == "kafka" or _topic_source(job)


def _lag_of(job: Watched) -> dict[str, Any]:
    from copyjob.cli.cdc import cdc_status

    try:
        store = job.open_store()
        try:
            states = [store.load(job.loaded.scope, name) for name in job.loaded.cdc_tables]
        finally:
            store.close()
        info = cdc_status(job.loaded, states)
    except CopyjobError as exc:
        return {"error": redact(str(exc))}
    except Exception as exc:  # a bug in one sample must not end the sampling
        log.exception("job=%s: cannot sample the cdc lag", job.name)
        return {"error": redact(repr(exc))}
    if info is None:  # a source without a slot (MySQL binlog): nothing to sample
        return {"error": None, "lag_bytes": None, "lag_seconds": None, "slot": None}
    return {k: info.get(k) for k in ("slot", "exists", "active", "lag_bytes", "lag_seconds", "wal_status",
                                      "max_lag_bytes", "max_lag_seconds", "warnings", "error")}


def _consumer_lag_of(job: Watched) -> dict[str, Any]:
    """Per partition of the job's topics, the consumer group's committed offset and its lag."""
    from copyjob.connectors.kafka.transport import KafkaTransport
    from copyjob.kafka_pipeline import apply_tables, group_id, settings_of

    def sample() -> Mapping[tuple[str, int], tuple[int | None, int]]:
        topics = sorted({t.topic for t in apply_tables(job.loaded, list(job.loaded.tables))})
        transport = KafkaTransport(settings_of(job.loaded))
        try:
            return transport.consumer_lag(group_id(job.loaded), topics)
        finally:
            transport.close()

    return _partitions_lag(job, "kafka consumer lag", sample)


def _applied_lag_of(job: Watched) -> dict[str, Any]:
    """A ``kafka://`` source's lag in the shape of :func:`_consumer_lag_of`: per partition of its topics (the
    patterns' matches now), the end offset less the offset the destination holds in its marker."""
    from copyjob.topic_source import applied_lag

    return _partitions_lag(job, "kafka lag", lambda: applied_lag(job.loaded))


def _partitions_lag(job: Watched, what: str,
                    sample: Callable[[], Mapping[tuple[str, int], tuple[int | None, int]]]) -> dict[str, Any]:
    from copyjob.kafka_pipeline import group_id

    at, group = time.time(), group_id(job.loaded)
    try:
        found = sample()
    except CopyjobError as exc:
        return {"at": at, "group": group, "partitions": [], "error": redact(str(exc))}
    except Exception as exc:  # a bug in one sample must not end the sampling
        log.exception("job=%s: cannot sample the %s", job.name, what)
        return {"at": at, "group": group, "partitions": [], "error": redact(repr(exc))}
    return {"at": at, "group": group, "error": None,
            "partitions": [{"topic": topic, "partition": partition, "committed": committed, "lag": lag}
                           for (topic, partition), (committed, lag) in sorted(found.items())]}
