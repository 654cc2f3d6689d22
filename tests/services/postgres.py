"""A throwaway PostgreSQL 15 server for tests and benchmarks (no pytest imports here).

``start_postgres(base_dir)`` installs Debian's ``postgresql-15`` when missing, initialises a cluster in
``base_dir/data`` and starts it on a free 127.0.0.1 port with logical replication enabled and durability
switched off (tests only). TCP connections need a password (scram), so tests can check wrong-password errors;
the superuser is ``postgres`` / ``postgres``. We run as root and PostgreSQL refuses that, so the server and
initdb run as the ``postgres`` OS user, which owns ``base_dir``. When that user cannot reach ``base_dir``
(pytest's ``/tmp/pytest-of-root`` is 0700, and every new pytest session resets it), the cluster lives in a
private folder under /tmp instead, removed by ``stop()``; the log stays in ``base_dir`` either way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.services._process import free_port, log_tail, stop_process

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
SUPERUSER = "postgres"
PASSWORD = "postgres"
START_TIMEOUT_S = 60.0
# Unix socket paths are limited to ~107 bytes; longer base dirs get their socket in a short temp dir.
_MAX_SOCKET_DIR = 80

SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "200",
}


@dataclass
class PostgresServer:
    base_dir: Path
    port: int
    home: Path
    """Where the cluster lives: ``base_dir``, or a private folder under /tmp (see the module docstring)."""
    socket_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path
    settings: dict[str, str] = field(default_factory=dict)
    """What the server was started with (:meth:`start_again` starts it with the same)."""

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str = PASSWORD) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/" \
               f"{quote(database, safe='')}"

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with psql over TCP; returns unaligned, tuples-only output. Raises on any SQL error."""
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql]
        env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "10"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}) on {database}: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        quoted = '"' + name.replace('"', '""') + '"'
        self.psql("postgres", f"CREATE DATABASE {quoted}")
        return self.url(name)

    def halt(self, timeout: float = 30.0) -> None:
        """Fast shutdown that keeps the cluster (an outage): :meth:`start_again` brings it back."""
        stop_process(self.process, timeout, signal.SIGINT)

    def start_again(self) -> None:
        """Start the halted cluster again on the same port and data folder; returns once it accepts
        connections."""
        self.process = _launch(self.home / "data", self.port, self.socket_dir, self.log_path, self.settings)
        _wait_ready(self.process, self.port, self.log_path)

    def stop(self, timeout: float = 30.0, *, keep: bool = True) -> None:
        """Fast shutdown (SIGINT: roll back sessions, then exit); SIGKILL if it does not finish in time. With
        ``keep=False`` an immediate shutdown (SIGQUIT: no checkpoint), for a cluster that is thrown away."""
        stop_process(self.process, timeout, signal.SIGINT if keep else signal.SIGQUIT)
        if self.socket_dir.parent != self.home:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self.home != self.base_dir:
            shutil.rmtree(self.home, ignore_errors=True)


def start_postgres(base_dir: Path, settings: dict[str, str] | None = None) -> PostgresServer:
    """Initialise and start a server in ``base_dir``; ``settings`` override/extend :data:`SETTINGS`."""
    _ensure_installed()
    base_dir.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwnam(OS_USER)
    home = _cluster_home(base_dir, user)
    data_dir = home / "data"
    if not (data_dir / "PG_VERSION").exists():
        _initdb(home, data_dir)
    socket_dir = _socket_dir(home, user)
    log_path = base_dir / "postgres.log"
    last_error: RuntimeError | None = None
    for _ in range(3):  # a free port can be taken between picking and binding: try another
        port = free_port()
        chosen = {**SETTINGS, **(settings or {})}
        process = _launch(data_dir, port, socket_dir, log_path, chosen)
        try:
            _wait_ready(process, port, log_path)
        except RuntimeError as exc:
            stop_process(process, 10.0, signal.SIGINT)
            last_error = exc
            if "could not bind" in log_tail(log_path) or "already in use" in log_tail(log_path):
                continue
            raise
        server = PostgresServer(base_dir=base_dir, port=port, home=home, socket_dir=socket_dir,
                                process=process, log_path=log_path, settings=chosen)
        atexit.register(server.stop, 10.0)  # no orphaned server when the caller forgets or crashes
        return server
    assert last_error is not None
    raise last_error


# ---------------------------------------------------------------- steps


def _ensure_installed() -> None:
    if (PG_BIN / "initdb").exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "postgresql-15"], check=True, env=env, capture_output=True)
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"postgresql-15 installed but {PG_BIN / 'initdb'} is missing")


def _cluster_home(base_dir: Path, user: pwd.struct_passwd) -> Path:
    """``base_dir`` when the postgres user can reach it, else a fresh private folder under /tmp."""
    home = base_dir if _reachable(base_dir, user) else Path(tempfile.mkdtemp(prefix="copyjob-pg-"))
    os.chown(home, user.pw_uid, user.pw_gid)
    if home != base_dir:
        with contextlib.suppress(OSError):
            (base_dir / "cluster").symlink_to(home)  # for whoever debugs a failed run
    return home


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Every ancestor is searchable by ``user`` (owner, group or other x bit). We never chmod them: that
    would race with whoever owns them."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == user.pw_gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


def _initdb(home: Path, data_dir: Path) -> None:
    pwfile = home / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    user = pwd.getpwnam(OS_USER)
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    cmd = [str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
           "--no-sync"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, user=OS_USER, group=user.pw_gid,
                              extra_groups=[], cwd=home, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def _socket_dir(home: Path, user: pwd.struct_passwd) -> Path:
    wanted = home / "sock"
    if len(str(wanted)) > _MAX_SOCKET_DIR:
        wanted = Path(tempfile.mkdtemp(prefix="pgsock"))
    wanted.mkdir(exist_ok=True)
    os.chown(wanted, user.pw_uid, user.pw_gid)
    return wanted




def _launch(data_dir: Path, port: int, socket_dir: Path, log_path: Path,
            settings: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [str(PG_BIN / "postgres"), "-D", str(data_dir), "-p", str(port), "-h", "127.0.0.1",
           "-k", str(socket_dir)]
    for name, value in settings.items():
        cmd += ["-c", f"{name}={value}"]
    user = pwd.getpwnam(OS_USER)
    log = log_path.open("ab")
    os.chown(log_path, user.pw_uid, user.pw_gid)
    try:
        # its own session, so a Ctrl-C in the test runner does not reach the server before stop() does
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                user=OS_USER, group=user.pw_gid, extra_groups=[], cwd=data_dir,
                                start_new_session=True)
    finally:
        log.close()


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    cmd = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode} while starting; log:\n"
                               f"{log_tail(log_path)}")
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres not ready on port {port} after {START_TIMEOUT_S:.0f}s; log:\n"
                       f"{log_tail(log_path)}")



