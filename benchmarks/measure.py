"""Running one command as a measured subprocess: wall time, peak RSS of its process tree, CPU time.

Peak RSS is the higher of two readings:
- the sum of the RSS of the process and all its descendants, sampled every ``POLL_S`` seconds;
- the kernel's own high-water mark (``ru_maxrss`` from ``wait4``) of the largest single process, which also
  catches a spike shorter than the polling interval.
Summing RSS over a tree counts shared pages (libraries) once per process, so it slightly overstates a
pipeline of several processes; for one Python process it is exact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL_S = 0.05
MB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """What one measured run of a command gave."""

    command: list[str]
    returncode: int | None  # None: killed after the timeout
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float  # user + system of the process and the descendants it waited for
    stdout_path: Path
    stderr_path: Path
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def error_text(self, max_lines: int = 12) -> str:
        """A short description of the failure: exit code and the last lines of stderr (or stdout)."""
        head = f"timed out after {self.seconds:.0f}s" if self.timed_out else f"exit code {self.returncode}"
        tail = (self.stderr().strip() or self.stdout().strip()).splitlines()[-max_lines:]
        return head + (": " + " | ".join(line.strip() for line in tail if line.strip()) if tail else "")


def _tree_rss(root: psutil.Process) -> int:
    """RSS in bytes of ``root`` and every descendant still alive (processes may vanish while we look)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_measured(command: Sequence[str], *, log_dir: Path, name: str, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, timeout_s: float = 900.0) -> Measurement:
    """Run ``command`` to its end (or until ``timeout_s``), sampling its process tree's memory.

    stdout and stderr go to ``log_dir/name.out`` and ``log_dir/name.err``. The command runs in its own
    session, so a timeout kills its whole process group and nothing else.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        root = psutil.Process(proc.pid)
        peak = 0
        timed_out = False
        status: int | None = None
        usage = None
        try:
            while True:
                # wait4 reaps the child itself, so its rusage (CPU time, ru_maxrss) is not lost to Popen.wait
                pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    status = wait_status
                    break
                peak = max(peak, _tree_rss(root))
                if time.perf_counter() - started > timeout_s:
                    timed_out = True
                    _kill_group(proc.pid)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(POLL_S)
        except BaseException:  # Ctrl-C reaches only us (the child has its own session): stop the child too
            _kill_group(proc.pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        seconds = time.perf_counter() - started
    returncode = None if timed_out else os.waitstatus_to_exitcode(status)
    proc.returncode = returncode if returncode is not None else -9  # reaped here: keep Popen consistent
    max_rss_kernel = usage.ru_maxrss * 1024 if usage is not None else 0  # Linux reports KiB
    cpu = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
    return Measurement(command=list(command), returncode=returncode, seconds=seconds,
                       peak_rss_mb=max(peak, max_rss_kernel) / MB, cpu_seconds=cpu, stdout_path=stdout_path,
                       stderr_path=stderr_path, timed_out=timed_out)


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (our own child's session), if anything is left in it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
