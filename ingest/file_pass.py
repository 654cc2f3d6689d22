"""A pass over a file set: the capture of a file source, shared by the direct copy (copyjob.file_copy, into a
destination) and the Kafka capture (copyjob.kafka_capture, onto a topic).

It decides which files a run reads (every file for a fresh pass, the rest of an interrupted pass, else new,
rewritten and fixed files: copyjob.ingest.files), reads each (JSON lines that grow keys are read again with
them), tracks the columns loaded so far and quarantines bad files; the consumer writes or publishes what a
file holds and commits :attr:`FileSetPass.mark` with it, through the one commit order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from copyjob.ingest.files import (
    FileMark,
    after_copy,
    after_failure,
    files_to_copy,
    finish_pass,
    forget_vanished,
    start_pass,
)

from copyjob.core.contracts import FileColumnsGrew, FileInfo, FileReader, FileSetSource, TableState
from copyjob.core.errors import BadFile
from copyjob.core.plan import TablePlan
from copyjob.core.schema import Column, TableName, TableSchema

log = logging.getLogger("copyjob")

SMALL_FILE_BYTES = 16 << 20
"""Files up to this size are read whole before they are written (a bad one never reaches the destination)."""
GROUP_FILES = 50
GROUP_BYTES = 32 << 20
"""A group of small files shares one commit: fewer transactions, and a crash redoes at most one group."""
MAX_REREADS = 20
"""A JSON-lines file whose later lines add keys is read again with them; this many times at most."""
SHOWN_ERRORS = 3


class FileSetPass:
    """One pass over a file set as every consumer of it sees it (this module's copy, the Kafka capture): which
    files (step 1), reading each (2, with the re-reads of JSON lines that grow keys), the columns loaded so far
    (3: the consumer is told of new ones) and the quarantine (5). The consumer writes or publishes what a file
    holds and commits :attr:`mark` with it.

    ``known`` are the columns whose types are already settled (the destination table's, or those a capture
    already published), named as in the files."""

    def __init__(self, plan: TablePlan, source: FileSetSource, state: TableState, known: Iterable[Column],
                 batch_rows: int) -> None:
        assert plan.files is not None
        self.plan, self.files, self.source, self.batch_rows = plan, plan.files, source, batch_rows
        self.previous = previous = FileMark.from_json(state.extra.get("files"))
        """The mark the pass starts from, as the state holds it."""
        first = state.needs_full or state.extra.get("committed_run_id") is None
        resume = not first and not previous.complete
        self.fresh = not resume and (plan.table.mode == "full" or first)
        """A pass over every file: the first one, or mode full (not a resumed one)."""
        self.mode_used = "full" if self.fresh or (resume and plan.table.mode == "full") else "incremental"
        if resume:
            log.info("%s: resuming a pass that did not finish", plan.label)
        self.mark = start_pass(forget_vanished(previous, plan.listed), fresh=self.fresh)
        self.todo = files_to_copy(plan.listed, self.mark)
        self.types: dict[str, Column] = {c.name: c for c in known}
        self.load: list[Column] = []
        """The columns read from now on, in order: those of the files read so far."""
        self.errors: list[str] = []
        self.bad_paths: set[str] = set()

    def copy(self, f: FileInfo, columns_added: Callable[[list[Column]], None],
             consume: Callable[[FileInfo, FileReader], None]) -> bool:
        """Open ``f`` and hand it to ``consume``, which reads ``reader.batches(self.load_schema())``; new
        columns are first added to :attr:`load` and passed to ``columns_added``. The mark moves past the file:
        True when it was consumed, False when it was quarantined (``consume`` raised BadFile)."""
        for _ in range(MAX_REREADS):
            try:
                reader = self.source.read_file(self.files, f, self.known(), batch_rows=self.batch_rows)
            except BadFile as exc:
                self.quarantine(f, exc)
                return False
            try:
                self._add_columns(reader.columns, columns_added)
                consume(f, reader)
                self.mark = after_copy(self.mark, f)
                return True
            except FileColumnsGrew as grew:  # read it again with the new columns
                self._add_columns(grew.columns, columns_added)
            except BadFile as exc:
                self.quarantine(f, exc)
                return False
            finally:
                reader.close()
        self.quarantine(f, BadFile(f"new keys kept appearing after {MAX_REREADS} reads", file=f.path))
        return False

    def quarantine(self, f: FileInfo, exc: BadFile) -> None:
        message = str(exc)
        log.warning("%s: quarantined (read again once it changes): %s", self.plan.label, message)
        self.errors.append(message)
        self.bad_paths.add(f.path)
        self.mark = after_failure(self.mark, f, message)

    def finish(self) -> None:
        """Every planned file was handled: the pass is complete."""
        self.mark = finish_pass(self.mark)

    def _add_columns(self, columns: Iterable[Column], columns_added: Callable[[list[Column]], None]) -> None:
        names = {c.name for c in self.load}
        new = [self.types.get(c.name, c) for c in columns if c.name not in names]
        if new:
            self.load.extend(new)
            columns_added(new)

    def known(self) -> TableSchema:
        """Every column with a settled type: read with that type when a file has it."""
        return TableSchema(TableName(self.files.name), tuple({**self.types, **{c.name: c for c in self.load}}
                                                             .values()))

    def load_schema(self) -> TableSchema:
        return TableSchema(TableName(self.files.name), tuple(self.load))

    def error(self) -> str | None:
        """The table's error when files were quarantined by this pass."""
        if not self.errors:
            return None
        shown = "; ".join(self.errors[:SHOWN_ERRORS])
        more = f"; and {len(self.errors) - SHOWN_ERRORS} more" if len(self.errors) > SHOWN_ERRORS else ""
        return f"{len(self.errors)} bad file(s) quarantined: {shown}{more}"

    def report_quarantined(self) -> None:
        """Files quarantined by earlier runs and still unchanged: said every run, so they are not forgotten."""
        waiting = [q.error for p, q in self.mark.quarantined.items() if p not in self.bad_paths]
        if waiting:
            log.warning("%s: %d file(s) stay quarantined until they change: %s", self.plan.label, len(waiting),
                        "; ".join(waiting[:SHOWN_ERRORS]))
