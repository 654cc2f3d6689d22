"""A ``kafka://host:port`` source: topics of change events that another tool (Debezium's connectors) or another
copyjob job published, applied into the destination by the apply side copyjob already has
(:mod:`copyjob.apply.kafka_apply`: fold per key, offsets committed in the destination with the data, dead
letters).

Each ``tables:`` entry names a topic (``name``) and the destination table (``target``); ``source.options``
(:class:`copyjob.jobfile.KafkaSourceOptions`) say how the topics are written (``format``: debezium, avro or
json), the consumer group and where a partition the destination holds nothing of starts. A job's ``kafka:``
section, when present, adds its librdkafka ``config`` (security settings) and message size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copyjob.core.urls import parse_url, scheme_of
from copyjob.jobfile import Job, KafkaSettings, KafkaSourceOptions

if TYPE_CHECKING:
    from copyjob.apply.kafka_apply import ApplyTable
    from copyjob.jobfile import ResolvedTable
    from copyjob.loader import LoadedJob

SCHEME = "kafka"


def is_topic_source(job: Job) -> bool:
    """The job's source is a ``kafka://`` URL: its tables are topics to apply."""
    return scheme_of(job.source.url) == SCHEME


def source_options(job: Job) -> KafkaSourceOptions:
    """The source's options as the model reads them (the loader has reported any problem at its line)."""
    return KafkaSourceOptions.model_validate(job.source.options)


def source_settings(loaded: LoadedJob) -> KafkaSettings:
    """The broker and topics of a ``kafka://`` source, in the shape the Kafka transport takes."""
    from copyjob.connectors.kafka.topic_source import bootstrap_servers

    job = loaded.job
    url = parse_url(job.source.url, loaded.base_dir)
    options = source_options(job)
    section = job.kafka
    extra: dict[str, Any] = {} if section is None else {"config": dict(section.config),
                                                         "max_message_bytes": section.max_message_bytes}
    return KafkaSettings(bootstrap_servers=bootstrap_servers(url),
                         topic_prefix=options.topic_prefix or loaded.topic_prefix,
                         format="json" if options.format == "debezium" else options.format,
                         schema_registry_url=options.schema_registry_url, group_id=options.group_id,
                         **extra)


def topic_problems(loaded: LoadedJob, topics: list[str]) -> list[str]:
    """``validate --connect``: the entries whose topic is not among the broker's ``topics``."""
    import difflib

    problems = []
    for t in loaded.tables:
        if t.spec.name not in topics:
            close = difflib.get_close_matches(t.spec.name, topics, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{loaded.path}:{loaded.line_of(('tables', t.index, 'name'))}: tables[{t.index}].name: "
                            f"no topic {t.spec.name!r} on the broker{hint}")
    return problems


def topic_tables(loaded: LoadedJob, tables: list[ResolvedTable]) -> list[ApplyTable]:
    """The apply side's view of the entries: topic = ``name``, destination table = ``target``; Debezium's
    Connect JSON decoded by :class:`copyjob.connectors.kafka.debezium_decode.DebeziumDecoder`."""
    from copyjob.apply.kafka_apply import ApplyTable
    from copyjob.connectors.kafka import dlq_topic
    from copyjob.connectors.kafka.debezium_decode import DebeziumDecoder
    from copyjob.core.schema import TableName

    options = source_options(loaded.job)
    prefix = options.topic_prefix or loaded.topic_prefix
    out = []
    for t in tables:
        spec = t.spec
        decoder = DebeziumDecoder(TableName.parse(spec.target_name), spec.name, spec.columns) \
            if options.format == "debezium" else None
        out.append(ApplyTable(table=t.as_table_job(), topic=spec.name, dlq=dlq_topic(prefix, spec.target_name),
                              decoder=decoder, start_latest=options.start == "latest"))
    return out
