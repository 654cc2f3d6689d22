"""The position ledger: the destination's marker is the truth; a missing table or marker, or a reset after
the marker, starts the table over; two scopes of one store never mix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from copyjob.offsets import open_state_store
from copyjob.offsets.ledger import Ledger, definition_change, moved_target

from copyjob.core.contracts import StateMarker, StateStore
from copyjob.core.schema import TableName

TABLE = TableName.parse("orders")


class Destination:
    """Just what the ledger asks a destination: its markers and whether a table exists."""

    def __init__(self) -> None:
        self.markers: dict[tuple[str, str], StateMarker] = {}
        self.tables: set[TableName] = set()

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        return self.markers.get((job, table))

    def reflect(self, table: TableName) -> Any:
        return object() if table in self.tables else None

    def commit(self, run_id: str, **state: Any) -> None:
        self.tables.add(TABLE)
        self.markers[("j", "orders")] = StateMarker("j", "orders", run_id, state)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with open_state_store(str(tmp_path / "state.db")) as s:
        yield s


def reconcile(ledger: Ledger, destination: Destination, mode: str | None = None) -> Any:
    return ledger.reconcile("orders", destination, TABLE, mode)  # type: ignore[arg-type]


def test_first_run_starts_over(store: StateStore) -> None:
    standing = reconcile(Ledger(store, "j@a", "j"), Destination())
    assert not standing.continues and standing.full_reason == "first run" and standing.state.needs_full


def test_the_marker_is_the_truth(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=41, watermark_type="int")
    standing = reconcile(ledger, destination)
    assert standing.continues and standing.state.watermark == 41
    assert standing.state.extra["committed_run_id"] == "20260101T000000.000001-aaaaaa"


def test_a_missing_destination_table_starts_over_whatever_the_store_says(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=41, watermark_type="int")
    state = reconcile(ledger, destination).state
    ledger.committed(state, "20260101T000000.000001-aaaaaa", watermark=41, watermark_type="int")
    destination.tables.clear()  # dropped
    standing = reconcile(ledger, destination)
    assert not standing.continues and standing.full_reason == "the destination table is missing"
    destination.markers.clear()
    destination.tables.add(TABLE)  # a new, empty destination: no marker of this job
    assert reconcile(ledger, destination).full_reason == "the destination holds no marker of this job for it"


def test_reset_outranks_older_markers_only(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=1, watermark_type="int")
    ledger.reset(["orders"], "20260102T000000.000000-bbbbbb")
    assert reconcile(ledger, destination).full_reason == "reset"
    destination.commit("20260103T000000.000000-cccccc", mode="full", watermark=9, watermark_type="int")
    assert reconcile(ledger, destination).continues


def test_markers_of_another_kind_or_an_unfinished_snapshot_do_not_count(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=1, watermark_type="int")
    assert not reconcile(ledger, destination, "cdc").continues
    destination.commit("20260101T000000.000002-aaaaaa", mode="cdc", snapshot="pending")
    assert reconcile(ledger, destination, "cdc").full_reason == "its snapshot did not finish"
    destination.commit("20260101T000000.000003-aaaaaa", mode="cdc", snapshot="completed", position={"lsn": 5})
    assert reconcile(ledger, destination, "cdc").marker.state["position"] == {"lsn": 5}


def test_two_scopes_never_share_a_row(store: StateStore) -> None:
    dev, prod = Ledger(store, "j@dev", "j"), Ledger(store, "j@prod", "j")
    state = dev.load("orders")
    dev.committed(state, "20260101T000000.000001-aaaaaa", watermark=100, watermark_type="int")
    assert prod.load("orders").watermark is None and dev.load("orders").watermark == 100
    dev.record("123")
    assert prod.recorded() is None and dev.recorded() == "123"


def test_a_store_from_before_scopes_is_taken_over_once(store: StateStore) -> None:
    from copyjob.core.contracts import TableState

    store.save("j", TableState(table="orders", watermark=7, watermark_type="int", needs_full=False))
    store.set_meta("j", "stream_position", "99")
    assert store.adopt_unscoped("j", "j@dev")
    assert store.load("j@dev", "orders").watermark == 7 and Ledger(store, "j@dev", "j").recorded() == "99"
    assert store.load("j", "orders").watermark is None
    assert not store.adopt_unscoped("j", "j@prod")  # the second environment starts from its own markers
    assert store.load("j@prod", "orders").watermark is None


DEFINITION = {"source": "orders", "mode": "polled", "incremental_column": "ts", "key": None,
              "update_method": "append", "target": "orders", "columns": {}, "pattern": None, "format": None}


def test_a_changed_definition_starts_over_with_the_change_as_the_reason(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=41, watermark_type="int",
                       definition=DEFINITION)
    assert ledger.reconcile("orders", destination, TABLE, definition=DEFINITION).continues  # type: ignore[arg-type]
    edited = {**DEFINITION, "incremental_column": "seq", "columns": {"name": "label"}}
    standing = ledger.reconcile("orders", destination, TABLE, definition=edited)  # type: ignore[arg-type]
    assert not standing.continues and standing.redefined and standing.state.needs_full
    assert standing.full_reason == "incremental column changed: ts → seq; column mapping changed: none → name: label"
    assert standing.state.extra["definition"] == edited  # the copy status and validate compare with


def test_a_marker_without_a_definition_and_fields_one_side_lacks_count_as_unchanged(store: StateStore) -> None:
    ledger, destination = Ledger(store, "j@a", "j"), Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="incremental", watermark=41, watermark_type="int")
    assert ledger.reconcile("orders", destination, TABLE, definition=DEFINITION).continues  # type: ignore[arg-type]
    assert definition_change({"source": "orders"}, DEFINITION) is None
    assert definition_change({**DEFINITION, "batch_rows": 1}, {**DEFINITION, "batch_rows": 2}) is None
    assert definition_change(DEFINITION, {**DEFINITION, "key": ["id"]}) == "key changed: none → id"


def test_a_position_kept_in_the_store_starts_over_after_an_edit(store: StateStore) -> None:
    ledger = Ledger(store, "j@a", "j")
    state, reason = ledger.load_defined("orders", DEFINITION)
    assert reason is None
    ledger.committed(state, "20260101T000000.000001-aaaaaa", watermark=41, watermark_type="int")
    state, reason = ledger.load_defined("orders", {**DEFINITION, "target": "orders_v2"})
    assert reason == "target table changed: orders → orders_v2" and state.needs_full


def test_a_new_target_is_traced_to_the_table_it_replaces(store: StateStore) -> None:
    ledger = Ledger(store, "j@a", "j")
    state, _ = ledger.load_defined("orders", DEFINITION)
    ledger.committed(state, "20260101T000000.000001-aaaaaa", watermark=41, watermark_type="int")
    moved = {**DEFINITION, "target": "orders_v2"}
    assert moved_target(ledger.load_all(), moved, {"orders_v2"}) == "target table changed: orders → orders_v2"
    assert moved_target(ledger.load_all(), moved, {"orders", "orders_v2"}) is None  # both in the job: a new table


def test_a_table_moved_to_a_new_target_says_so_without_replacing_anything(store: StateStore) -> None:
    ledger = Ledger(store, "j@a", "j", targets=["orders_v2"])
    destination = Destination()
    destination.commit("20260101T000000.000001-aaaaaa", mode="cdc", snapshot="completed", position={"lsn": 1},
                       definition=DEFINITION)
    standing = ledger.reconcile("orders", destination, TABLE, mode="cdc", definition=DEFINITION)  # type: ignore[arg-type]
    ledger.committed(standing.state, "20260101T000000.000001-aaaaaa")
    moved = {**DEFINITION, "target": "orders_v2"}
    standing = ledger.reconcile("orders_v2", destination, TableName.parse("orders_v2"), mode="cdc",  # type: ignore[arg-type]
                                definition=moved)
    assert standing.edit == "target table changed: orders → orders_v2" and not standing.redefined
    both = Ledger(store, "j@a", "j", targets=["orders", "orders_v2"])  # a second table, not a move
    assert both.reconcile("orders_v2", destination, TableName.parse("orders_v2"), mode="cdc",  # type: ignore[arg-type]
                          definition=moved).edit is None


def test_an_edit_of_a_position_kept_in_the_store_opens_a_new_epoch_once(store: StateStore) -> None:
    """The apply side of transport: kafka empties its table at the first event of a newer epoch."""
    ledger = Ledger(store, "j@a", "j")
    state, _ = ledger.load_defined("orders", DEFINITION)
    assert "epoch" not in state.extra
    ledger.committed(state, "20260101T000000.000001-aaaaaa", watermark=41, watermark_type="int")
    edited = {**DEFINITION, "incremental_column": "seq"}
    first, _ = ledger.load_defined("orders", edited)
    retried, _ = ledger.load_defined("orders", edited)  # the first attempt failed before its commit
    assert "" < first.extra["epoch"] < retried.extra["epoch"]
    ledger.committed(retried, "20260101T000000.000002-aaaaaa", watermark=7, watermark_type="int")
    again, reason = ledger.load_defined("orders", edited)
    assert reason is None and again.extra["epoch"] == retried.extra["epoch"]


def test_a_reset_of_a_position_kept_in_the_store_opens_a_new_epoch(store: StateStore) -> None:
    """Published again after a reset, the table replaces what the apply side holds (except a change table)."""
    ledger = Ledger(store, "j@a", "j")
    state, _ = ledger.load_defined("orders", DEFINITION)
    ledger.committed(state, "20260101T000000.000001-aaaaaa", watermark=41, watermark_type="int")
    ledger.reset(["orders"], "20260101T000000.000002-bbbbbb")
    first, reason = ledger.load_defined("orders", DEFINITION)
    retried, _ = ledger.load_defined("orders", DEFINITION)  # the first attempt failed before its commit
    assert reason is None and first.needs_full and "" < first.extra["epoch"] < retried.extra["epoch"]
    ledger.committed(retried, "20260101T000000.000003-aaaaaa", watermark=7, watermark_type="int")
    assert ledger.load_defined("orders", DEFINITION)[0].extra["epoch"] == retried.extra["epoch"]
    changes = {**DEFINITION, "mode": "cdc"}  # cdc under append: the new snapshot is added to the history
    edited, _ = ledger.load_defined("orders", changes)
    ledger.committed(edited, "20260101T000000.000004-aaaaaa")
    ledger.reset(["orders"], "20260101T000000.000005-bbbbbb")
    assert ledger.load_defined("orders", changes)[0].extra["epoch"] == edited.extra["epoch"]


def test_an_attempt_after_one_that_began_publishing_and_never_committed_opens_a_new_epoch(
        store: StateStore) -> None:
    """A first capture records, before its first event, that it began publishing; the attempt after one that
    failed before its commit publishes under a new epoch, so the apply side drops what the failed one left."""
    ledger = Ledger(store, "j@a", "j")
    first, _ = ledger.load_defined("orders", DEFINITION)
    assert "epoch" not in first.extra and store.load("j@a", "orders").extra.get("opened")
    retried, _ = ledger.load_defined("orders", DEFINITION)  # the first attempt died before its commit
    again, _ = ledger.load_defined("orders", DEFINITION)
    assert retried.needs_full and "" < retried.extra["epoch"] < again.extra["epoch"]
    ledger.committed(again, "20260101T000000.000001-aaaaaa", watermark=7, watermark_type="int")
    assert "opened" not in store.load("j@a", "orders").extra
    assert ledger.load_defined("orders", DEFINITION)[0].extra["epoch"] == again.extra["epoch"]


@pytest.mark.parametrize("method", ["merge", "append"])
def test_a_lost_change_stream_is_a_saved_restart(store: StateStore, method: str) -> None:
    """Snapshotted again, as after a reset: under a new epoch, except a change table (cdc under append)."""
    ledger = Ledger(store, "j@a", "j")
    cdc = {**DEFINITION, "mode": "cdc", "update_method": method}
    state, _ = ledger.load_defined("orders", cdc)
    state.extra["cdc_position"] = {"lsn": 1}
    ledger.committed(state, "20260101T000000.000001-aaaaaa")
    state, _ = ledger.load_defined("orders", cdc)
    ledger.stream_lost("orders", state, cdc)
    saved = store.load("j@a", "orders")
    assert saved.needs_full and "cdc_position" not in saved.extra
    assert ("epoch" in saved.extra) == (method == "merge")
