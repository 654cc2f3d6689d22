"""``copyjob verify``: prove a job's destination equals its source, and repair exactly what differs.

- :mod:`copyjob.verify.canonical`: which columns are compared, hashed in SQL or in Python;
- :mod:`copyjob.verify.ranges`: cutting the key space into ranges;
- :mod:`copyjob.verify.bisect`: digests per range in both databases, bisection, rows of small ranges;
- :mod:`copyjob.verify.repair`: re-copying the differing keys through the destination's merge;
- :mod:`copyjob.verify.files`: sides that are files (a file-set source, a file destination), read with the
  copy's readers into DuckDB (``connectors/_digest_arrow.py``);
- :mod:`copyjob.verify.report`: the per-table report; :mod:`copyjob.verify.table` and
  :mod:`copyjob.verify.job`: one table, a whole job and its history.

The SQL that computes a canonical row text and its hash lives with the connectors
(``connectors/_digest_sql.py``, the text defined in ``connectors/_canonical.py``).
"""

from copyjob.verify.job import last_verification, record, verify_job
from copyjob.verify.report import TableReport
from copyjob.verify.table import VerifyOptions

__all__ = ["TableReport", "VerifyOptions", "last_verification", "record", "verify_job"]
