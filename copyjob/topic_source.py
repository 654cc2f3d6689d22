"""A ``kafka://host:port`` source: topics of change events that another tool (Debezium's connectors) or another
copyjob job published, applied into the destination by the apply side copyjob already has
(:mod:`copyjob.apply.kafka_apply`: fold per key, offsets committed in the destination with the data, dead
letters).

Each ``tables:`` entry names a topic (``name``), or with a leading ``^`` a pattern of topics
(copyjob.topic_patterns), and the destination table (``target``); ``source.options``
(:class:`copyjob.jobfile.KafkaSourceOptions`) say how the topics are written (``format``: debezium, avro or
json), the consumer group and where a partition the destination holds nothing of starts. A job's ``kafka:``
section, when present, adds its librdkafka ``config`` (security settings) and message size.

Pattern entries become one entry per matched topic in :func:`expand` (against the broker's topics at a run's
start: :func:`with_topics`; against the topics the state store has seen, for ``status``: :func:`from_state`).
:func:`applied_lag` is what the monitor reports as such a job's lag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from copyjob.core.errors import JobFileError
from copyjob.core.urls import parse_url, scheme_of
from copyjob.jobfile import Job, KafkaSettings, KafkaSourceOptions
from copyjob.topic_patterns import is_pattern, render_target

if TYPE_CHECKING:
    from copyjob.apply.kafka_apply import ApplyTable
    from copyjob.core.contracts import TableState
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
    try:
        expand(loaded, topics)
    except JobFileError as exc:
        problems.append(str(exc))
    for t in loaded.entries:
        if not is_pattern(t.spec.name) and t.spec.name not in topics:
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


def applied_lag(loaded: LoadedJob) -> dict[tuple[str, int], tuple[int | None, int]]:
    """Per partition of the job's topics (patterns matched now), the offset the destination holds (its marker;
    None: nothing yet) and the messages after it: the end offset less that offset, or less the log start when
    there is none. Read-only: the group is not joined and nothing is written."""
    from copyjob.connectors import open_destination
    from copyjob.connectors.kafka.topic_source import watermarks
    from copyjob.filesets import endpoint_url

    loaded = with_topics(loaded)
    settings = source_settings(loaded)
    by_topic = {t.topic: t for t in topic_tables(loaded, loaded.tables)}
    marks = watermarks(settings.bootstrap_servers, settings.config, sorted(by_topic))
    destination = open_destination(endpoint_url(loaded.job.destination, loaded.base_dir))
    try:
        out: dict[tuple[str, int], tuple[int | None, int]] = {}
        for (topic, p), (low, high) in sorted(marks.items()):
            marker = destination.read_marker(loaded.job.job, by_topic[topic].marker_name(p))
            at = marker.state.get("offset") if marker is not None else None
            held = None if at is None else int(at)
            out[(topic, p)] = (held, max(0, high - (low if held is None else max(held, low))))
        return out
    finally:
        destination.close()


def has_patterns(loaded: LoadedJob) -> bool:
    return any(is_pattern(t.spec.name) for t in loaded.entries)


def expand(loaded: LoadedJob, topics: Iterable[str]) -> LoadedJob:
    """``loaded`` with each pattern entry replaced by one entry per topic it matches (in name order), keeping
    the pattern entry's index (errors name its lines). Raises JobFileError (exit 2) when two topics would be
    applied into one target, naming both."""
    from copyjob.connectors.kafka.topic_source import is_internal

    entries = loaded.entries
    if not any(is_pattern(t.spec.name) for t in entries):
        return loaded
    explicit = {t.spec.name for t in entries if not is_pattern(t.spec.name)}
    free = sorted(t for t in set(topics) if not is_internal(t) and t not in explicit)
    out: list[ResolvedTable] = []
    for t in entries:
        if not is_pattern(t.spec.name):
            out.append(t)
            continue
        regex = re.compile(t.spec.name)
        matched = [topic for topic in free if regex.fullmatch(topic)]
        free = [topic for topic in free if topic not in matched]
        template = t.spec.target or "${topic}"
        out.extend(t.model_copy(update={"spec": t.spec.model_copy(update={
            "name": topic, "target": render_target(template, topic)})}) for topic in matched)
    _check_targets(loaded, out)
    return replace(loaded, matched=out)


def _check_targets(loaded: LoadedJob, tables: list[ResolvedTable]) -> None:
    seen: dict[str, ResolvedTable] = {}
    for t in tables:
        other = seen.setdefault(t.spec.target_name, t)
        if other is not t:
            pattern = t if is_pattern(loaded.entries[t.index].spec.name) else other
            raise JobFileError(f"topics {other.spec.name!r} and {t.spec.name!r} would both be applied into "
                               f"{t.spec.target_name!r}: make the target template tell them apart (e.g. "
                               "${source.schema}_${source.table}) or narrow the pattern",
                               file=str(loaded.path), line=loaded.line_of(("tables", pattern.index, "target")),
                               field=f"tables[{pattern.index}].target")


def with_topics(loaded: LoadedJob) -> LoadedJob:
    """:func:`expand` against the broker's topics now (``loaded`` itself when no entry is a pattern)."""
    if not has_patterns(loaded):
        return loaded
    from copyjob.connectors.kafka.topic_source import list_topics

    settings = source_settings(loaded)
    return expand(loaded, list_topics(settings.bootstrap_servers, settings.config))


def from_state(loaded: LoadedJob, states: Mapping[str, TableState]) -> LoadedJob:
    """:func:`expand` against the topics the state store has seen applied (each table's ``topic``): what
    ``status`` shows without asking the broker."""
    if not has_patterns(loaded):
        return loaded
    topics = [s.extra["topic"] for s in states.values() if isinstance(s.extra.get("topic"), str)]
    try:
        return expand(loaded, topics)
    except JobFileError:
        return loaded  # the run that meets it reports it
