"""How a CDC run is tuned by default: ``max_batch_delay`` is 200 ms direct and 50 ms through Kafka (where a change
waits for a batch on both sides), a value in the job file wins over either; while changes stream, Python's cyclic
collector runs rarely (the decoded changes hold no cycles), and its settings come back when the last stream ends."""

from __future__ import annotations

import gc
import textwrap
from pathlib import Path

import pytest

from copyjob.cdc import YOUNG_COLLECTION_EVERY, few_collections
from copyjob.loader import load_job

JOB = """\
job: j
source: {url: 'postgresql://u:p@localhost/src'}
destination: {url: 'postgresql://u:p@localhost/dst'}
copy: {mode: cdc, update_method: merge}
tables: [{name: public.t}]
"""


@pytest.mark.parametrize(("extra", "delay_s"), [
    ("", 0.2),
    ("transport: kafka\nkafka: {bootstrap_servers: 'localhost:9092'}\n", 0.05),
    ("transport: kafka\nkafka: {bootstrap_servers: 'localhost:9092'}\ncdc: {max_batch_delay: 1s}\n", 1.0),
    ("cdc: {max_batch_delay: 80ms}\n", 0.08),
])
def test_max_batch_delay_follows_the_transport_unless_set(tmp_path: Path, extra: str, delay_s: float) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB + textwrap.dedent(extra))
    job = load_job(path).job
    assert job.cdc.as_capture_options(job.transport).max_batch_delay_s == pytest.approx(delay_s)


def test_the_collector_runs_rarely_while_streams_run_and_is_restored_after_the_last() -> None:
    before = gc.get_threshold()
    with few_collections():
        assert gc.get_threshold()[0] >= YOUNG_COLLECTION_EVERY
        with few_collections():  # a second stream of the process (serve)
            assert gc.get_threshold()[0] >= YOUNG_COLLECTION_EVERY
        assert gc.get_threshold()[0] >= YOUNG_COLLECTION_EVERY  # the first one still runs
    assert gc.get_threshold() == before
