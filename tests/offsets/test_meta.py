"""The store's small per-job values (serve keeps each schedule's last fire time there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from copyjob.offsets import open_state_store
from sqlalchemy import text


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path.as_posix()}/state.db"


def test_meta_is_per_job_and_replaced(store_url: str) -> None:
    with open_state_store(store_url) as store:
        assert store.get_meta("a", "k") is None
        store.set_meta("a", "k", "1")
        store.set_meta("b", "k", "2")
        store.set_meta("a", "k", "3")
    with open_state_store(store_url) as store:
        assert (store.get_meta("a", "k"), store.get_meta("b", "k")) == ("3", "2")


def test_a_store_made_before_job_meta_gets_it_on_first_use(store_url: str) -> None:
    with open_state_store(store_url) as store, store.engine.begin() as conn:
        conn.execute(text("DROP TABLE job_meta"))  # as an earlier copyjob left it
    with open_state_store(store_url) as store:
        assert store.get_meta("a", "k") is None
        store.set_meta("a", "k", "v")
        assert store.get_meta("a", "k") == "v"
