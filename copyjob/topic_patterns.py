"""Topic patterns of a ``kafka://`` source (copyjob.topic_source).

A ``tables:`` entry whose ``name`` starts with ``^`` is a regular expression over topic names (librdkafka's
subscription convention), matched against the whole name as Kafka Connect's ``topics.regex`` is. Its ``target``
is a template with the Debezium JDBC sink's placeholders (its ``collection.name.format``): ``${topic}``,
``${source.schema}`` and ``${source.table}``, the last two taken from the topic's last two dot-separated parts
(``<prefix>.<schema>.<table>``, as Debezium and copyjob name topics).

:func:`copyjob.topic_source.expand` matches the entries against the broker's topics when a run starts (a
stream lists them again every ``source.options.pattern_refresh``): each matched topic becomes an entry of its
own, with its own markers and state, exactly as if it were written out. Internal topics
(:func:`copyjob.connectors.kafka.topic_source.is_internal`) never match; a topic an explicit entry names is
that entry's, and one that two patterns match is the first's.
"""

from __future__ import annotations

import re

PATTERN_START = "^"
PLACEHOLDERS = ("topic", "source.schema", "source.table")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_USE = "use ${topic}, ${source.schema} or ${source.table}"


def is_pattern(name: str) -> bool:
    """A ``tables:`` entry's name that is a regular expression over topic names."""
    return name.startswith(PATTERN_START)


def pattern_problem(name: str) -> str | None:
    """Why ``name`` is not a regular expression (None: it is)."""
    try:
        re.compile(name)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


def template_problem(target: str, *, pattern: bool) -> str | None:
    """What is wrong with an entry's ``target`` as a template (None: nothing)."""
    used = _PLACEHOLDER.findall(target)
    if not pattern:
        return f"${{{used[0]}}} is a placeholder of a topic pattern (a name starting with ^)" if used else None
    unknown = [u for u in used if u not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder ${{{unknown[0]}}}: {_USE}"
    if not used:
        return f"the target of a topic pattern needs a placeholder ({_USE}): every topic it matches would be " \
               "applied into this one table"
    return None


def render_target(template: str, topic: str) -> str:
    """The destination table of ``topic`` under ``template``."""
    parts = topic.split(".")
    values = {"topic": topic, "source.table": parts[-1], "source.schema": parts[-2] if len(parts) > 1 else ""}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
