"""A destination table starting over at a new epoch (``copyjob.offsets.ledger``), emptied once however many
apply members meet the epoch at the same moment.

The capture side of ``transport: kafka`` publishes a table again under a new epoch whenever it publishes it
from its beginning again (an edit of the job file, a ``reset``, a lost change stream, a capture that failed
before its commit); every apply member holding one of its partitions meets the epoch's first event. Steps, in
this order, for each member that meets it:

1. the table exists (created when missing), so that step 2 has a table to take the write lock of;
2. one destination transaction empties the table (taking its write lock: PostgreSQL's TRUNCATE, SQLite's
   ``BEGIN IMMEDIATE``, the row locks of MySQL's DELETE) and then reads the claim marker ``<table>#epoch``
   (a transaction the server rolls back as a deadlock victim is tried again, ``core.retry.on_conflict``).
   A member that emptied the table before committed its claim with its emptying, and wrote rows of the epoch
   only after that: so a claim naming this epoch (or a newer one) is always seen here when the emptying would
   remove such rows, and then the transaction rolls back (nothing emptied). Otherwise it commits with the
   claim: this member emptied the table for the epoch;
3. the member that emptied it creates it again when its shape no longer fits (``copyjob.apply.target.misfit``:
   another key, an append table instead of a merge table, ...); the others wait until it fits before writing.

Destinations without locks (files, Delta, Iceberg) take one writer per table, as everywhere else; there the
claim still keeps a member restarted after step 2 from emptying the table a second time.
"""

from __future__ import annotations

import logging
import time

from copyjob.apply.target import misfit, prepare_target
from copyjob.offsets.ledger import EPOCH_KEY

from copyjob.core.contracts import Destination, StateMarker
from copyjob.core.errors import ConnectorError
from copyjob.core.retry import on_conflict
from copyjob.core.schema import TableSchema

log = logging.getLogger("copyjob.kafka")
FIT_WAIT_S = 120.0
"""How long a member waits for the member that emptied the table to create it again in its new shape."""


def claim_name(table: str) -> str:
    """The marker that records the epoch the table was last emptied for."""
    return f"{table}#epoch"


def claimed_epoch(destination: Destination, job: str, table: str) -> str:
    """The epoch the table was last emptied for ("" when never)."""
    found = destination.read_marker(job, claim_name(table))
    return str(found.state.get(EPOCH_KEY) or "") if found is not None else ""


def start_epoch(destination: Destination, job: str, run_id: str, wanted: TableSchema, epoch: str, *,
                name: str, create: bool, append: bool, alone: bool = False) -> bool:
    """Steps 1-3 of the module docstring for the destination table ``wanted`` (the job's table ``name``);
    True when this call emptied it. ``alone``: the only member, applying the topic from its beginning (a
    replay), which empties the table at each new epoch whatever an earlier claim says."""
    prepare_target(destination, wanted, create=create, defer_key=False, append=append)  # 1.
    existing = destination.reflect(wanted.table)
    if existing is None:
        raise ConnectorError(f"{wanted.table}: the table was dropped while it started over", retriable=True)

    def empty_once() -> bool:  # 2.
        session = destination.begin_load(existing, "append", (), truncate=True)
        try:
            emptied = alone or claimed_epoch(destination, job, name) < epoch
            if emptied:
                session.commit(StateMarker(job=job, table=claim_name(name), run_id=run_id,
                                           state={EPOCH_KEY: epoch}))
            else:
                session.abort()
        except BaseException:
            session.abort()
            raise
        return emptied

    # two members emptying at once can deadlock (MySQL's row locks): the server rolls one back, which tries
    # again, waits for the other's commit and then finds its claim
    emptied = on_conflict(empty_once, f"{name}: starting over at epoch {epoch}")
    if emptied:  # 3.
        log.warning("%s: the capture side started the table over (epoch %s): emptied it", name, epoch)
        prepare_target(destination, wanted, create=create, defer_key=False, append=append, replace=True)
    elif create:
        _await_fit(destination, wanted, append)
    return emptied


def _await_fit(destination: Destination, wanted: TableSchema, append: bool) -> None:
    """Until the member that emptied the table has created it again where its shape did not fit; after
    :data:`FIT_WAIT_S` (that member stopped in between) this member does it."""
    deadline = time.monotonic() + FIT_WAIT_S
    while True:
        existing = destination.reflect(wanted.table)
        if existing is not None and misfit(existing, wanted, append) is None:
            return
        if time.monotonic() > deadline:
            prepare_target(destination, wanted, create=True, defer_key=False, append=append, replace=True)
            return
        time.sleep(0.2)
