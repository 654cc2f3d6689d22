"""A private MariaDB server for tests and benchmarks: own datadir, socket and free TCP port under one folder.

Not the system service: ``start_mariadb`` initialises a datadir with ``mariadb-install-db`` (installing
Debian's ``mariadb-server`` when the binaries are missing), starts ``mariadbd`` with the binlog in ROW format
(ready for CDC work), creates the user ``copyjob``/``copyjob`` and waits until it can log in over TCP.
No pytest imports: benchmarks reuse this module.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql

from tests.services._process import free_port, log_tail

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
USER = "copyjob"
PASSWORD = "copyjob"


@dataclass
class MariadbServer:
    base_dir: Path
    port: int
    socket_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def error_log(self) -> Path:
        return self.base_dir / "error.log"

    def url(self, database: str | None = None, user: str = USER, password: str = PASSWORD) -> str:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"mysql://{auth}@127.0.0.1:{self.port}/{quote(database or '', safe='')}"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """A root connection over the unix socket (autocommit)."""
        return pymysql.connect(unix_socket=str(self.socket_path), user="root", database=database,
                               charset="utf8mb4", autocommit=True)

    def execute(self, sql: str, database: str | None = None, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root and return its rows (empty for statements without a result)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def execute_all(self, database: str, *statements: str) -> None:
        """Run statements in order on one root connection (so that BEGIN … COMMIT spans them)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create an empty utf8mb4 database and return its URL for the ``copyjob`` user."""
        quoted = "`" + name.replace("`", "``") + "`"
        self.execute(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
        return self.url(name)

    def start_again(self) -> None:
        """Start the stopped server again on the same port and data folder (an outage ends); returns once the
        ``copyjob`` user can log in over TCP."""
        mariadbd, _ = _binaries()
        datadir = self.base_dir / "data"
        with self.error_log.open("ab") as log:
            self.process = subprocess.Popen(_server_args(mariadbd, self.base_dir, datadir, self.socket_path,
                                                         self.port),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_socket(self)
        _wait_for_tcp(self)

    def stop(self, *, keep: bool = True) -> None:
        """Clean shutdown (SIGTERM makes mariadbd flush and exit); kill when it does not exit in time. With
        ``keep=False`` killed at once, for a datadir that is thrown away."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM if keep else signal.SIGKILL)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_mariadb(base_dir: Path) -> MariadbServer:
    """Initialise (once) and start a MariaDB server under ``base_dir``; returns when ``copyjob`` can log in."""
    mariadbd, install_db = _binaries()
    base_dir = base_dir.resolve()
    datadir = base_dir / "data"
    base_dir.mkdir(parents=True, exist_ok=True)
    if not (datadir / "mysql").is_dir():
        _install_datadir(install_db, datadir, base_dir)
    for attempt in range(3):
        server = _launch(mariadbd, base_dir, datadir)
        try:
            _wait_for_socket(server)
            _create_user(server)
            _wait_for_tcp(server)
            return server
        except BaseException:
            server.stop()
            # another process may have taken the free port between picking and binding it: pick again
            if attempt < 2 and "Bind on TCP/IP port" in log_tail(server.error_log, 10, missing="(no error log)"):
                continue
            raise
    raise AssertionError("unreachable")


def _launch(mariadbd: str, base_dir: Path, datadir: Path) -> MariadbServer:
    port = free_port()
    sock = base_dir / "mysqld.sock"
    with (base_dir / "error.log").open("ab") as log:
        process = subprocess.Popen(_server_args(mariadbd, base_dir, datadir, sock, port),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = MariadbServer(base_dir=base_dir, port=port, socket_path=sock, process=process)
    atexit.register(server.stop)  # no stray server when a test session dies without teardown
    return server


# ---------------------------------------------------------------- helpers


def _binaries() -> tuple[str, str]:
    """Paths of mariadbd and mariadb-install-db, installing Debian's packages when they are missing."""
    found = _which_binaries()
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "mariadb-server", "mariadb-client"], check=True, env=env,
                       capture_output=True)
        found = _which_binaries()
    if found is None:
        raise RuntimeError("mariadbd / mariadb-install-db not found even after apt-get install mariadb-server")
    return found


def _which_binaries() -> tuple[str, str] | None:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"
    server = shutil.which("mariadbd", path=path) or shutil.which("mysqld", path=path)
    install = shutil.which("mariadb-install-db", path=path) or shutil.which("mysql_install_db", path=path)
    return (server, install) if server and install else None


def _user_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; as another user --user is not needed
    return ["--user=root"] if os.geteuid() == 0 else []


def _install_datadir(install_db: str, datadir: Path, base_dir: Path) -> None:
    args = [install_db, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
            "--skip-test-db", "--skip-name-resolve", *_user_args()]
    result = subprocess.run(args, capture_output=True, text=True, cwd=base_dir)
    if result.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _server_args(mariadbd: str, base_dir: Path, datadir: Path, sock: Path, port: int) -> list[str]:
    # a temporary folder of its own: a starting server deletes every "#sql*" file in its tmpdir, which in a
    # shared /tmp are the temporary tables of another server running a query (pytest -n 2 starts two)
    tmpdir = base_dir / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    return [
        mariadbd, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
        f"--tmpdir={tmpdir}",
        "--bind-address=127.0.0.1", f"--pid-file={base_dir / 'mysqld.pid'}",
        f"--log-error={base_dir / 'error.log'}", *_user_args(),
        f"--log-bin={base_dir / 'binlog'}", "--binlog-format=ROW", "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",  # column names and types in the binlog: change capture reads them
        "--server-id=1", "--log-slave-updates",
        # speed over durability: this server holds only test data
        "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--innodb-doublewrite=0",
        "--innodb-buffer-pool-size=256M", "--skip-name-resolve", "--character-set-server=utf8mb4",
        "--max-connections=500",
    ]






def _wait_until(server: MariadbServer, attempt: Any, what: str) -> None:
    """Call ``attempt()`` until it succeeds; fail with the error log when the server exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {server.process.returncode} before {what}:\n"
                               f"{log_tail(server.error_log, missing='(no error log)')}")
        try:
            attempt()
            return
        except pymysql.err.MySQLError as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"mariadbd: no {what} within {START_TIMEOUT_S:.0f}s (last error: {last}):\n"
                       f"{log_tail(server.error_log, missing='(no error log)')}")


def _wait_for_socket(server: MariadbServer) -> None:
    _wait_until(server, lambda: server.connect().close(), "root login over the socket")


def _wait_for_tcp(server: MariadbServer) -> None:
    def attempt() -> None:
        pymysql.connect(host="127.0.0.1", port=server.port, user=USER, password=PASSWORD,
                        connect_timeout=5).close()

    _wait_until(server, attempt, f"TCP login as {USER} on port {server.port}")


def _create_user(server: MariadbServer) -> None:
    for host in ("%", "127.0.0.1", "localhost"):
        account = f"'{USER}'@'{host}'"
        server.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{PASSWORD}'")
        server.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION")
        server.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {account}")
