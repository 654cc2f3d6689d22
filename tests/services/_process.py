"""What the service harnesses (PostgreSQL, MariaDB, Kafka) share: a free port, stopping a server process,
the end of its log for error messages, jars fetched from Maven Central."""

from __future__ import annotations

import contextlib
import fcntl
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

LOG4J_FILE = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
"""
"""The start of the log4j2 settings of the Java services: everything into one file (``{log}``)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Ask the server to stop with ``sig``; kill it when it has not exited after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def log_tail(path: Path, lines: int = 40, missing: str = "(no log)") -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return missing


def maven_jars(pom: Path, lib: Path, required: Sequence[str], what: str) -> Path:
    """The runtime jars of ``pom`` in ``lib``, fetched with ``mvn dependency:copy-dependencies`` unless a jar
    matching each of the ``required`` globs is there already."""
    lib.mkdir(parents=True, exist_ok=True)
    with (lib.parent / f".{lib.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test workers (pytest -n) starting at once: one fetches, all wait
        if not all(any(lib.glob(pattern)) for pattern in required):
            _fetch(pom, lib, required, what)
    return lib


def _fetch(pom: Path, lib: Path, required: Sequence[str], what: str) -> None:
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib}",
           "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not all(any(lib.glob(pattern)) for pattern in required):
        raise RuntimeError(f"fetching {what} jars failed ({done.returncode}): "
                           f"{(done.stdout + done.stderr).strip()[-2000:]}")
