# The types of what copyjob/__init__.py imports lazily (see its docstring).
from copyjob.api import Job, RunResult, StatusResult, TableResult, TableStatus, history, load_job, run, status
from copyjob.core.errors import CopyjobError, JobFileError

__version__: str

__all__ = ["CopyjobError", "Job", "JobFileError", "RunResult", "StatusResult", "TableResult", "TableStatus",
           "__version__", "history", "load_job", "run", "status"]
