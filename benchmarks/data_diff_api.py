"""data-diff through its Python API, for verify_bench's anchors (run by data-diff's own Python).

data-diff 0.11's command line imports its dbt integration unconditionally (``from data_diff.dbt import
dbt_diff``), which fails without ``dbt-core`` installed; the library itself does not need it. Same arguments as
the command line (``SOURCE TABLE DESTINATION TABLE -k KEY -c COLUMN ...``), same output: one ``+``/``-`` line per
differing row, exit 0.

    /tmp/anchor-datadiff/bin/python benchmarks/data_diff_api.py postgresql://… orders duckdb://… orders -k id -c name
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="data_diff_api")
    p.add_argument("source")
    p.add_argument("source_table")
    p.add_argument("destination")
    p.add_argument("destination_table")
    p.add_argument("-k", "--key-columns", action="append", default=[])
    p.add_argument("-c", "--columns", action="append", default=[])
    args = p.parse_args(argv)
    from data_diff import connect_to_table, diff_tables

    key = tuple(args.key_columns or ["id"])
    extra = tuple(args.columns)
    a = connect_to_table(args.source, args.source_table, key, extra_columns=extra)
    b = connect_to_table(args.destination, args.destination_table, key, extra_columns=extra)
    for sign, row in diff_tables(a, b):
        print(sign, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
