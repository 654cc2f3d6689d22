"""The monitor: a web page, a JSON API under ``/api/`` and Prometheus metrics for served or watched jobs.

- :mod:`.feed` reads what the page shows from the jobs' state stores (one thread; the HTTP threads only read its
  last snapshot, so a slow store never stalls a request);
- :mod:`.lag` samples the CDC lag of jobs with cdc tables into memory, for the chart and the gauges;
- :mod:`.metrics` turns finished runs into Prometheus counters and histograms (a private registry);
- :mod:`.actions` runs a job now or resets a table: through ``serve``'s loop, or in a thread of ``monitor``;
- :mod:`.http` serves all of it (the stdlib's threading HTTP server) with the token rule of :mod:`.access`.

Every text that leaves the monitor goes through :func:`copyjob.core.redaction.redact` (see :func:`.feed.scrub`).
"""

from __future__ import annotations

from copyjob.monitor.http import Monitor, MonitorOptions

__all__ = ["Monitor", "MonitorOptions"]
