"""A throwaway single-node Apache Kafka broker (KRaft) for tests and benchmarks (no pytest imports, no Docker).

``start_kafka(base_dir)`` fetches Kafka's jars from Maven Central when missing (``mvn dependency:copy-dependencies``
on ``tests/services/kafka/pom.xml`` into ``.cache/kafka/lib``, git-ignored), formats a storage folder in
``base_dir`` with ``kafka.tools.StorageTool format --standalone`` and runs ``java -cp 'lib/*' kafka.Kafka
server.properties`` on free 127.0.0.1 ports, tuned for speed (replication factor 1, no initial rebalance delay,
512 MB heap). :meth:`KafkaBroker.restart` stops and starts it on the same ports and storage.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.services._process import LOG4J_FILE, free_port, log_tail, maven_jars, stop_process

ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
LIB = Path(os.environ.get("COPYJOB_KAFKA_LIB", ROOT / ".cache" / "kafka" / "lib"))
START_TIMEOUT_S = 90.0

SETTINGS: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "3",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "log.flush.interval.messages": "9223372036854775807",
    "log.segment.bytes": "67108864",
    "log.cleaner.dedupe.buffer.size": "16777216",
    "num.network.threads": "2",
    "num.io.threads": "4",
}

LOG4J = LOG4J_FILE + """\
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def ensure_jars(lib: Path = LIB) -> Path:
    """Kafka's jars in ``lib``, fetched from Maven Central with the repository's pom when missing."""
    return maven_jars(POM, lib, ["kafka_2.13-*.jar"], "Kafka's")


@dataclass
class KafkaBroker:
    base_dir: Path
    port: int
    controller_port: int
    process: subprocess.Popen[bytes] | None = field(repr=False)
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL when it does not finish in time."""
        if self.process is not None:
            stop_process(self.process, timeout)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, wait ``down_s``, start again on the same ports and storage."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def start(self) -> None:
        if self.process is not None:
            return
        self.process = _launch(self.base_dir, self.log_path)
        _wait_ready(self.process, self.port, self.log_path)


def start_kafka(base_dir: Path, settings: dict[str, str] | None = None, heap: str = "512m") -> KafkaBroker:
    """Format a single-node KRaft storage in ``base_dir`` and start a broker on free local ports."""
    lib = ensure_jars()
    base_dir.mkdir(parents=True, exist_ok=True)
    last_error: RuntimeError | None = None
    for _ in range(3):  # a free port can be taken between picking and binding: try others
        port, controller = free_port(), free_port()
        _write_config(base_dir, lib, port, controller, {**SETTINGS, **(settings or {})}, heap)
        _format_storage(base_dir)
        log_path = base_dir / "kafka.log"
        broker = KafkaBroker(base_dir=base_dir, port=port, controller_port=controller, process=None,
                             log_path=log_path)
        try:
            broker.start()
        except RuntimeError as exc:
            broker.kill()
            last_error = exc
            if "Address already in use" in _log_tail(log_path):
                continue
            raise
        atexit.register(broker.stop, 10.0)
        return broker
    assert last_error is not None
    raise last_error


# ---------------------------------------------------------------- steps


def _write_config(base_dir: Path, lib: Path, port: int, controller: int, settings: dict[str, str],
                  heap: str) -> None:
    props = {
        **settings,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
        "log.dirs": str(base_dir / "data"),
    }
    (base_dir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (base_dir / "log4j2.properties").write_text(LOG4J.format(log=base_dir / "kafka-server.log"))
    (base_dir / "lib").unlink(missing_ok=True)
    (base_dir / "lib").symlink_to(lib)
    (base_dir / "heap").write_text(heap)


def _java_cmd(base_dir: Path, main: str, *args: str) -> list[str]:
    heap = (base_dir / "heap").read_text().strip()
    return ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={base_dir / 'log4j2.properties'}",
            "-cp", f"{base_dir / 'lib'}/*", main, *args]


def _format_storage(base_dir: Path) -> None:
    data = base_dir / "data"
    if (data / "meta.properties").exists():
        import shutil

        shutil.rmtree(data)  # new ports → new controller address: start from empty storage
    cluster_id = _cluster_id()
    # --cluster-id=…: a generated id may begin with "-", which the tool would read as an option
    cmd = _java_cmd(base_dir, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                    "-c", str(base_dir / "server.properties"), "--standalone")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kafka storage format failed ({done.returncode}): {done.stdout}{done.stderr}")


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _launch(base_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = _java_cmd(base_dir, "kafka.Kafka", str(base_dir / "server.properties"))
    log = log_path.open("ab")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=base_dir, start_new_session=True)
    finally:
        log.close()




def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Ready when the broker answers a metadata request (a bare TCP accept comes earlier than that)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kafka exited with {process.returncode} while starting; log:\n{_log_tail(log_path)}")
        if _answers(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"kafka not ready on port {port} after {START_TIMEOUT_S:.0f}s; log:\n{_log_tail(log_path)}")


def _answers(port: int) -> bool:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:  # no client library: a TCP connection is the best we can do
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0})
    try:
        meta = admin.list_topics(timeout=2)
    except Exception:
        return False
    return bool(meta.brokers) and meta.controller_id is not None and meta.controller_id >= 0




def _log_tail(log_path: Path, lines: int = 40) -> str:
    """The ends of the process output and of the broker's own log."""
    parts = [log_tail(p, lines, missing="") for p in (log_path, log_path.with_name("kafka-server.log"))]
    return "\n".join(p for p in parts if p) or "(no log)"
