"""The engine: every command that moves data is captures feeding sinks through the one checkpoint.

The job's ``transport`` picks a :class:`Pipeline` here, once; nothing else asks which transport it has:

=========  ===========================================  ==========================================
transport  ``run`` (bounded) / ``stream`` (until stop)  what feeds what
=========  ===========================================  ==========================================
direct     :meth:`copyjob.runner.JobRun.run_direct`     table copies: watermark poller → destination
                                                        sink; file sets: file pass → destination
                                                        sink; cdc: log capture → destination sink
kafka      :func:`copyjob.kafka_pipeline.run_kafka`,    capture side: poller / file pass / log
           :func:`copyjob.kafka_stream.stream_kafka`    capture → topic sink; apply side: topic
                                                        capture → destination sink
(a kafka:// :func:`copyjob.topic_pipeline.run_topics`,  topics another tool or job wrote → topic
source)    :func:`copyjob.topic_pipeline.stream_topics` capture → destination sink
=========  ===========================================  ==========================================

Every commit on every path goes through :class:`copyjob.core.checkpoint.Checkpoint` (data and marker, then
positions, then the source's acknowledgement); positions are reconciled, saved and reset by
:class:`copyjob.offsets.ledger.Ledger`; failures are retried by :func:`copyjob.core.retry.retrying`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from copyjob.core.errors import UsageError

if TYPE_CHECKING:
    from copyjob.core.contracts import RunRecord
    from copyjob.loader import LoadedJob
    from copyjob.runs import RunContext


class Pipeline(Protocol):
    def run(self, job_run: RunContext, tables: list[str] | None) -> RunRecord:
        """Copy the tables once: polled tables up to now, cdc tables up to the log's end when the run began."""

    def stream(self, job_run: RunContext, tables: list[str] | None, poll_interval_s: float) -> RunRecord:
        """Keep copying until ``job_run.stop`` is set (SIGTERM/SIGINT) or a table fails."""


class DirectPipeline:
    """One process reads and writes."""

    def run(self, job_run: RunContext, tables: list[str] | None) -> RunRecord:
        return job_run.run_direct(tables)

    def stream(self, job_run: RunContext, tables: list[str] | None, poll_interval_s: float) -> RunRecord:
        names = job_run.loaded.cdc_tables
        if not names:
            raise UsageError(f"{job_run.loaded.path}: copyjob stream needs tables with mode cdc")
        job_run.cdc_until_stopped = True
        return job_run.run_direct(tables or names)


class KafkaPipeline:
    """Topics between the capture side and the apply side."""

    def run(self, job_run: RunContext, tables: list[str] | None) -> RunRecord:
        from copyjob.kafka_pipeline import run_kafka

        return run_kafka(job_run, tables)

    def stream(self, job_run: RunContext, tables: list[str] | None, poll_interval_s: float) -> RunRecord:
        from copyjob.kafka_stream import stream_kafka

        return stream_kafka(job_run, tables, poll_interval_s=poll_interval_s)


class TopicsPipeline:
    """A ``kafka://`` source: its topics are applied into the destination in this process."""

    def run(self, job_run: RunContext, tables: list[str] | None) -> RunRecord:
        from copyjob.topic_pipeline import run_topics

        return run_topics(job_run, tables)

    def stream(self, job_run: RunContext, tables: list[str] | None, poll_interval_s: float) -> RunRecord:
        from copyjob.topic_pipeline import stream_topics

        return stream_topics(job_run, tables)


PIPELINES: dict[str, Pipeline] = {"direct": DirectPipeline(), "kafka": KafkaPipeline()}
TOPICS = TopicsPipeline()


def pipeline(loaded: LoadedJob) -> Pipeline:
    from copyjob.topic_source import is_topic_source

    return TOPICS if is_topic_source(loaded.job) else PIPELINES[loaded.job.transport]


def run(job_run: RunContext, tables: list[str] | None = None) -> RunRecord:
    return pipeline(job_run.loaded).run(job_run, tables)


def stream(job_run: RunContext, tables: list[str] | None = None, poll_interval_s: float = 0.5) -> RunRecord:
    return pipeline(job_run.loaded).stream(job_run, tables, poll_interval_s)
