"""The dlt side of the benchmark, run as its own process (so its memory is measured apart from ours):

    BENCH_SRC_URL=postgresql://… BENCH_DST_URL=postgresql://… BENCH_DLT_DIR=/tmp/… python -m benchmarks.dlt_load

Copies ``public.orders`` with ``sql_table(backend="pyarrow")`` into the destination's ``public`` schema
(append into a fresh database) and prints the load info, and the file formats dlt loaded, as JSON.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def main() -> None:
    started = time.perf_counter()
    import dlt
    from dlt.sources.sql_database import sql_table

    source = sql_table(credentials=os.environ["BENCH_SRC_URL"], schema="public", table="orders",
                       backend="pyarrow")
    pipeline = dlt.pipeline(pipeline_name="bench_orders", pipelines_dir=os.environ["BENCH_DLT_DIR"],
                            destination=dlt.destinations.postgres(credentials=os.environ["BENCH_DST_URL"]),
                            dataset_name="public")
    info = pipeline.run(source, write_disposition="append")
    formats: set[str] = set()
    for package in info.load_packages:
        for job in package.jobs.get("completed_jobs", []):
            formats.add(str(job.job_file_info.file_format))
    summary: dict[str, Any] = {
        "seconds_in_process": round(time.perf_counter() - started, 3),
        "dlt_version": dlt.__version__,
        "loader_file_formats": sorted(formats),
        "has_failed_jobs": info.has_failed_jobs,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
