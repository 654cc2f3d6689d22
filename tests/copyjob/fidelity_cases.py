"""The fidelity matrix, declared once: every PostgreSQL type and edge value × every destination × every mode,
each cell exact, a named conversion, or an error.

:data:`CASES` are the source columns (one PostgreSQL type and a class of edge values each), :data:`EXPECT` the
one table of expectations (a cell not in it is ``exact``), :data:`CONVERSIONS` what each conversion does.
``tests/copyjob/test_fidelity.py`` runs the matrix; :func:`render_markdown` prints a destination's column of
it for its ``docs/types-*.md`` page, and the test checks that the page shows exactly that
(``python -m tests.copyjob.fidelity_cases`` rewrites the pages).

Values are compared through PostgreSQL: the source value's text and the destination's value (as text) are both
cast to the source column's type and printed, so that spelling (``1.50``/``1.5``, ``T``/space) does not count
but every difference of value does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DESTINATIONS = ("postgresql", "mariadb", "sqlite", "duckdb", "parquet", "csv", "jsonl", "iceberg", "delta")
MODES = ("full", "incremental", "cdc", "kafka")
"""``full``: full load (append); ``incremental``: incremental merge (append for csv/jsonl); ``cdc``: snapshot
then streamed changes, transport direct; ``kafka``: the same through Kafka."""


@dataclass(frozen=True)
class Case:
    column: str
    pg_type: str
    values: tuple[str, ...]
    """SQL literals, one per row."""
    what: str


CASES: tuple[Case, ...] = (
    Case("i16", "smallint", ("-32768", "32767", "0"), "smallint extremes"),
    Case("i32", "integer", ("-2147483648", "2147483647"), "integer extremes"),
    Case("i64", "bigint", ("-9223372036854775808", "9223372036854775807"), "bigint extremes"),
    Case("num", "numeric(12,2)", ("-1234567890.12", "0.01", "0.00"), "numeric(12,2)"),
    Case("num_wide", "numeric(60,20)", ("1234567890123456789012345678901234567890.12345678901234567890",
                                        "-0.00000000000000000001"), "numeric(60,20), 60 digits"),
    Case("num_free", "numeric", ("1234567890123456789.123456789012345", "-0.000000000001"),
         "numeric without precision"),
    Case("num_huge", "numeric", ("123456789012345678901234567890.123456789", "1e-30"),
         "numeric without precision, 30 integer or fraction digits"),
    Case("num_nan", "numeric", ("'NaN'", "'Infinity'", "'-Infinity'"), "numeric NaN, ±Infinity"),
    Case("num_scaled_nan", "numeric(12,2)", ("'NaN'",), "numeric(p,s) NaN"),
    Case("f4", "real", ("1.5", "3.4028235e38", "1e-45", "-1.1754944e-38"), "real: extremes, subnormal"),
    Case("f8", "double precision", ("3.141592653589793", "1.7976931348623157e308", "5e-324"),
         "double: extremes, subnormal"),
    Case("f4_nan", "real", ("'NaN'",), "real NaN"),
    Case("f8_nan", "double precision", ("'NaN'",), "double NaN"),
    Case("f8_inf", "double precision", ("'Infinity'", "'-Infinity'"), "double ±Infinity"),
    Case("f4_inf", "real", ("'Infinity'", "'-Infinity'"), "real ±Infinity"),
    Case("f8_negzero", "double precision", ("'-0'",), "double -0.0"),
    Case("f4_negzero", "real", ("'-0'",), "real -0.0"),
    Case("b", "boolean", ("true", "false"), "boolean"),
    Case("txt", "text", ("'héllo ✓ 😀'", "E'tab\\there\\nnew line \\u0001'", "''"),
         "text: unicode, emoji, control characters, empty string (≠ NULL)"),
    Case("vc", "varchar(10)", ("'short'", "''"), "varchar(n)"),
    Case("ch", "char(5)", ("'ab'",), "char(n) padding"),
    Case("bin", "bytea", ("'\\x00ff00'", "'\\x'"), "bytea with zero bytes, empty"),
    Case("d", "date", ("'1999-12-31'", "'0001-01-01'", "'9999-12-31'"), "date"),
    Case("d_bc", "date", ("'0044-03-15 BC'",), "date BC"),
    Case("d_inf", "date", ("'infinity'", "'-infinity'"), "date ±infinity"),
    Case("t", "time", ("'00:00:00'", "'23:59:59.999999'"), "time"),
    Case("t_24", "time", ("'24:00:00'",), "time 24:00"),
    Case("ttz", "timetz", ("'12:34:56.5+05:30'",), "time with time zone"),
    Case("ts", "timestamp", ("'2026-03-29 02:30:00.123456'", "'1970-01-01 00:00:00'", "'0001-01-01 00:00:00'"),
         "timestamp, µs"),
    Case("ts_bc", "timestamp", ("'0044-03-15 12:00:00.5 BC'",), "timestamp BC"),
    Case("ts_inf", "timestamp", ("'infinity'", "'-infinity'"), "timestamp ±infinity"),
    Case("tstz", "timestamptz", ("'2026-11-25 23:00:00.654321+00'", "'2026-06-01 12:00:00+05:30'"),
         "timestamptz (source session in a non-UTC zone)"),
    Case("tstz_inf", "timestamptz", ("'infinity'", "'-infinity'"), "timestamptz ±infinity"),
    Case("iv", "interval", ("'1 year 2 mons 3 days 04:05:06.789'", "'-1 days'"), "interval"),
    Case("u", "uuid", ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",), "uuid"),
    Case("j", "json", ("'{\"b\": 1, \"a\": [1, 2.50, \"ü\"], \"big\": 123456789012345678901234567890}'",),
         "json: key order, unicode, big numbers"),
    Case("jb", "jsonb", ("'{\"b\": 1, \"a\": [1, 2.50, \"ü\"], \"big\": 123456789012345678901234567890}'",),
         "jsonb"),
    Case("arr", "integer[]", ("'{1,NULL,3}'",), "integer array"),
    Case("arr_t", "text[]", ("'{\"a b\",\"c,d\"}'",), "text array"),
    Case("ip", "inet", ("'10.0.0.1'", "'10.0.0.1/24'", "'::1'"), "inet"),
    Case("net", "cidr", ("'10.0.0.0/24'",), "cidr"),
    Case("mac", "macaddr", ("'08:00:2b:01:02:03'",), "macaddr"),
    Case("m", "money", ("'12.34'",), "money"),
    Case("e", "mood", ("'happy'",), "enum"),
    Case("bits", "bit(4)", ("B'1010'",), "bit(n)"),
    Case("vb", "varbit", ("B'101'",), "bit varying"),
    Case("x", "xml", ("'<a b=\"1\">t</a>'",), "xml"),
)
SETUP_SQL = "CREATE TYPE mood AS ENUM ('sad', 'happy')"


@dataclass(frozen=True)
class Conversion:
    what: str
    """How the value is changed, for the docs."""
    expected: str = "{v}"
    """SQL giving the expected value from the source value ``{v}`` (typed as the source column)."""
    compare_as: str | None = None
    """The type both sides are cast to before comparing (default: the source column's)."""


CONVERSIONS: dict[str, Conversion] = {
    "as text": Conversion("stored as PostgreSQL's text of the value (a string column)"),
    "rounded to 10 places": Conversion("stored as DECIMAL(38,10): rounded to 10 decimal places",
                                       expected="round({v}, 10)"),
    "nan as text": Conversion("stored as the TEXT `NaN` (SQLite stores a NaN REAL as NULL); read back as NaN"),
    "sign of zero lost": Conversion("-0.0 is stored as 0.0 (SQLite's REAL affinity stores integral reals as "
                                    "integers)", expected="CASE WHEN {v} = 0 THEN 0 ELSE {v} END"),
    "jsonb": Conversion("stored as jsonb: key order and white space normalised, duplicate keys dropped",
                        expected="{v}::jsonb", compare_as="jsonb"),
    "json text": Conversion("stored as JSON text, normalised as the destination prints JSON (same value)",
                            expected="{v}::jsonb", compare_as="jsonb"),
    "pg text": Conversion("written as PostgreSQL spells it (`infinity`, `-infinity`, `0044-03-15 BC`, "
                          "`24:00:00`)"),
    "string": Conversion("written as the JSON string `\"NaN\"`, `\"Infinity\"`, `\"-Infinity\"` (as Kafka "
                         "Connect's and Debezium's JSON converter writes them)"),
    "base64": Conversion("written as a base64 string"),
    "hex": Conversion("written as PostgreSQL's hex text (`\\x00ff00`)"),
    "nan spelling": Conversion("written as Arrow spells it: `nan`, `inf`, `-inf`"),
    "infinity sentinel": Conversion("stored as the type's largest/smallest value + 1 (Arrow int64/int32 "
                                    "±(2^63-1) / ±(2^31-1)), which DuckDB reads as ±infinity"),
    "error": Conversion("refused: the run fails with a DataError naming the table, the column and the row"),
}
"""Every expectation other than ``exact``; a cell's value is one of these names."""

_TEXT_DESTINATIONS = ("mariadb", "sqlite", "duckdb", "parquet", "csv", "jsonl", "iceberg", "delta")
EXPECT: dict[str, dict[str, str]] = {
    # unconstrained numeric travels as text; PostgreSQL keeps it as numeric
    "num_free": {"duckdb": "rounded to 10 places"},
    "bin": {"csv": "hex", "jsonl": "base64"},
    # Arrow's decimals have no NaN (PostgreSQL → PostgreSQL copies it only by binary pass-through: full append
    # into an existing table of the same types)
    "num_scaled_nan": dict.fromkeys(DESTINATIONS, "error"),
    "num_huge": {"duckdb": "error"},
    "num_nan": {"mariadb": "error", "sqlite": "as text", "duckdb": "error", "parquet": "as text",
                "csv": "as text", "jsonl": "as text", "iceberg": "as text", "delta": "as text"},
    "f4_nan": {"sqlite": "nan as text", "mariadb": "error", "csv": "nan spelling", "jsonl": "string"},
    "f8_nan": {"sqlite": "nan as text", "mariadb": "error", "csv": "nan spelling", "jsonl": "string"},
    "f8_inf": {"mariadb": "error", "csv": "nan spelling", "jsonl": "string"},
    "f4_inf": {"mariadb": "error", "csv": "nan spelling", "jsonl": "string"},
    "f8_negzero": {"sqlite": "sign of zero lost", "mariadb": "sign of zero lost"},
    "f4_negzero": {"sqlite": "sign of zero lost", "mariadb": "sign of zero lost"},
    "j": {"postgresql": "jsonb", "mariadb": "json text", "duckdb": "json text"},
    "d_bc": {"mariadb": "error", "sqlite": "pg text", "csv": "pg text", "jsonl": "pg text"},
    "d_inf": {"mariadb": "error", "sqlite": "pg text", "csv": "pg text", "jsonl": "pg text",
              "parquet": "infinity sentinel", "iceberg": "infinity sentinel", "delta": "error"},
    "t_24": {"sqlite": "pg text", "csv": "pg text", "jsonl": "pg text"},
    "ts_bc": {"mariadb": "error", "sqlite": "pg text", "csv": "pg text", "jsonl": "pg text"},
    "ts_inf": {"mariadb": "error", "sqlite": "pg text", "csv": "pg text", "jsonl": "pg text",
               "parquet": "infinity sentinel", "iceberg": "infinity sentinel", "delta": "error"},
    "tstz_inf": {"mariadb": "error", "sqlite": "pg text", "csv": "pg text", "jsonl": "pg text",
                 "parquet": "infinity sentinel", "iceberg": "infinity sentinel", "delta": "error"},
    **{c: dict.fromkeys(("postgresql", *_TEXT_DESTINATIONS), "as text")
       for c in ("ttz", "iv", "arr", "arr_t", "ip", "net", "mac", "m", "e", "bits", "vb", "x")},
}
"""case column → destination → expectation (``exact`` when absent), the same in every mode but for
:data:`IN_MODE`."""

IN_MODE: dict[tuple[str, str], dict[str, str]] = {}
"""(case column, destination) → mode → expectation, where a mode differs from :data:`EXPECT`."""


def expectation(case: Case, destination: str, mode: str | None = None) -> str:
    """The cell's expectation; with ``mode`` None, the one of most modes."""
    found = IN_MODE.get((case.column, destination), {}).get(mode or "")
    return found or EXPECT.get(case.column, {}).get(destination, "exact")


def cases_for(destination: str, mode: str, *, errors: bool) -> list[Case]:
    """The cases a destination stores (``errors=False``) or refuses (``errors=True``) in ``mode``."""
    return [c for c in CASES if (expectation(c, destination, mode) == "error") == errors]


# ------------------------------------------------------------ the docs

DOC_PAGES = {"postgresql": "types-postgres.md", "mariadb": "types-mysql.md", "sqlite": "types-sqlite.md",
             "duckdb": "types-duckdb.md", "parquet": "types-parquet.md", "csv": "types-files.md",
             "jsonl": "types-files.md", "iceberg": "types-iceberg.md", "delta": "types-delta.md"}
_LABEL = {"postgresql": "PostgreSQL", "mariadb": "MySQL/MariaDB", "sqlite": "SQLite", "duckdb": "DuckDB",
          "parquet": "Parquet", "csv": "CSV", "jsonl": "JSON lines", "iceberg": "Apache Iceberg",
          "delta": "Delta Lake"}


def render_markdown(destination: str) -> str:
    """The destination's column of the matrix, as its docs page shows it (between the two markers)."""
    lines = [f"<!-- fidelity:{destination} (generated from tests/copyjob/fidelity_cases.py) -->",
             f"### From PostgreSQL into {_LABEL[destination]}: every value, every mode", "",
             "The same in full, incremental, change capture (direct) and change capture through Kafka unless "
             "a mode is named; checked by `tests/copyjob/test_fidelity.py`.", "",
             "| PostgreSQL column | edge values | result |", "|---|---|---|"]
    for case in CASES:
        found = expectation(case, destination)
        result = "exact" if found == "exact" else f"{found}: {CONVERSIONS[found].what}"
        for mode, other in IN_MODE.get((case.column, destination), {}).items():
            result += f"; but {other} in mode {mode}"
        values = ", ".join(f"`{v}`" for v in case.values)
        lines.append(f"| {case.pg_type} ({case.what}) | {values} | {result} |")
    lines.append(f"<!-- /fidelity:{destination} -->")
    return "\n".join(lines)


def _block(destination: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- fidelity:{destination} .*?<!-- /fidelity:{destination} -->", re.S)


def documented(destination: str, docs: Path) -> str | None:
    """The block the docs page shows for ``destination`` (None when it has none)."""
    found = _block(destination).search((docs / DOC_PAGES[destination]).read_text(encoding="utf-8"))
    return found.group(0) if found else None


def rewrite_docs(docs: Path) -> None:
    """Put every destination's rendered block into its page (replacing the old one, or appending)."""
    for destination in DESTINATIONS:
        page = docs / DOC_PAGES[destination]
        text = page.read_text(encoding="utf-8") if page.exists() else ""
        block = render_markdown(destination)
        if _block(destination).search(text):
            text = _block(destination).sub(lambda _, block=block: block, text)  # type: ignore[misc]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        page.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    rewrite_docs(Path(__file__).resolve().parents[2] / "docs")
