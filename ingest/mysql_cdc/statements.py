"""Statements the binlog logs as text (query events): transaction brackets, TRUNCATE and schema changes.

In ROW format only these reach the binlog as text; every row change comes as a rows event instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["begin", "commit", "inside", "truncate", "ddl"]

_COMMENTS = re.compile(r"^(?:\s+|/\*.*?\*/|#[^\n]*\n|--\s[^\n]*\n)*", re.S)
_IDENT = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?({_IDENT})(?:\s*\.\s*({_IDENT}))?", re.I)
_WORD = re.compile(r"^([A-Za-z]+)(?:\s+([A-Za-z]+))?")
_IDENTS = re.compile(_IDENT)


@dataclass(frozen=True)
class Statement:
    kind: Kind
    schema: str | None = None
    """TRUNCATE: the table's database (the statement's default database when it names none)."""
    table: str | None = None
    text: str = ""

    def mentions(self, name: str) -> bool:
        """Whether ``name`` occurs as an identifier (a schema change may concern that table)."""
        return any(_unquote(token) == name for token in _IDENTS.findall(self.text))


def _unquote(ident: str) -> str:
    return ident[1:-1].replace("``", "`") if ident.startswith("`") else ident


def classify(query: str, default_schema: str | None) -> Statement:
    text = _COMMENTS.sub("", query, count=1).strip()
    m = _WORD.match(text)
    first = (m.group(1) or "").upper() if m else ""
    second = (m.group(2) or "").upper() if m else ""
    if first == "BEGIN" or (first == "XA" and second in ("START", "BEGIN")):
        return Statement("begin", text=text)
    if first in ("COMMIT", "ROLLBACK") and second not in ("TO", "WORK TO"):
        return Statement("commit", text=text)
    if first == "XA" and second in ("COMMIT", "ROLLBACK"):
        return Statement("commit", text=text)
    if first in ("SAVEPOINT", "RELEASE", "ROLLBACK", "XA"):
        return Statement("inside", text=text)
    t = _TRUNCATE.match(text)
    if t:
        if t.group(2):
            return Statement("truncate", _unquote(t.group(1)), _unquote(t.group(2)), text)
        return Statement("truncate", default_schema, _unquote(t.group(1)), text)
    return Statement("ddl", text=text)
