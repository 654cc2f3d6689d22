"""compose/ works as shipped, checked without Docker: docker-compose.yml is valid under the Compose
Specification (the schema check-jsonschema vendors from compose-spec/compose-spec), every path, copyjob command
and flag, and ``${VAR}`` it uses exists, every service is health-checked and waited for, the databases get the
settings and users change capture needs, and the sample jobs run: the init scripts are applied to the test
services and the jobs in compose/jobs are run against them with their variables pointed there."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from copyjob.jobfile import job_json_schema
from tests.helpers import ROOT, copyjob
from tests.pg_cdc import drop_slots, rows
from tests.services.kafka import KafkaBroker
from tests.services.mariadb import MariadbServer
from tests.services.postgres import PASSWORD, PG_BIN, SUPERUSER, PostgresServer

COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
JOBS = sorted(p for p in (COMPOSE_DIR / "jobs").glob("*.yaml") if p.name != "variables.yaml")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolated(text: str) -> str:
    """Compose's interpolation with an empty environment: each ``${VAR:-default}`` becomes its default."""
    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(2) not in ("-", ":-"):
            raise AssertionError(f"{m.group(0)} in docker-compose.yml has no default (write ${{NAME:-value}})")
        return m.group(3)
    return _INTERPOLATION.sub(replace, text)


def interpolate_values(node: Any) -> Any:
    """Compose interpolates the values of the file (not its comments or keys)."""
    if isinstance(node, dict):
        return {k: interpolate_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_values(v) for v in node]
    return interpolated(node) if isinstance(node, str) else node


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = interpolate_values(yaml.safe_load(COMPOSE_FILE.read_text()))
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def copyjob_services() -> dict[str, dict[str, Any]]:
    """The services that run the image built from compose/Dockerfile (its entrypoint is copyjob)."""
    return {name: s for name, s in services().items() if "build" in s}


def test_valid_under_the_compose_specification() -> None:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = validator_for(schema)(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not problems


def test_every_variable_has_a_default() -> None:
    assert interpolated("${A:-x}:${B-y}:$$") == "x:y:$"
    with pytest.raises(AssertionError, match="no default"):
        interpolated("${PASSWORD}")
    assert compose()  # every value of the file interpolated: raises naming a variable without a default


def test_every_service_is_health_checked_and_waited_for() -> None:
    for name, service in services().items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: add a healthcheck"
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services(), f"{name} depends on an unknown service {dependency}"
            assert how == {"condition": "service_healthy"}, f"{name}: wait for {dependency} to be healthy"
    assert copyjob_services()["serve"]["depends_on"].keys() == {"postgres", "mariadb", "kafka"}


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path inside the service's container comes from on the host (its bind mounts); None for a
    named volume or a path the image holds."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        inside = PurePosixPath(container_path)
        if source.startswith((".", "/")) and inside.is_relative_to(target):
            return COMPOSE_DIR / source / inside.relative_to(target)
    return None


def test_every_path_exists() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: volume {source} does not exist"
            else:
                assert source in compose().get("volumes", {}), f"{name}: named volume {source} is not declared"
        build = service.get("build")
        if build:
            context = COMPOSE_DIR / build["context"]
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            for source in dockerfile_sources(dockerfile):
                assert (context / source).exists(), f"{dockerfile}: COPY {source} does not exist in the context"
            ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
            if ignore.exists():
                kept = {line[1:] for line in ignore.read_text().splitlines() if line.startswith("!")}
                assert set(dockerfile_sources(dockerfile)) <= kept, f"{ignore} leaves out what the Dockerfile copies"
    for init in ("postgres", "mariadb"):
        assert list((COMPOSE_DIR / "initdb" / init).iterdir()), f"initdb/{init} is empty"


def dockerfile_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY":
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def commands() -> list[tuple[str, list[str]]]:
    """The copyjob command lines of the compose file: each service's command and copyjob health checks."""
    found = []
    for name, service in copyjob_services().items():
        found.append((name, [str(a) for a in service["command"]]))
        test = service["healthcheck"]["test"]
        if test[0] == "CMD" and test[1] == "copyjob":
            found.append((name, [str(a) for a in test[2:]]))
    return found


@pytest.mark.parametrize(("service", "argv"), commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_command_and_flag_exists(service: str, argv: list[str]) -> None:
    help_text = copyjob(argv[0], "--help")
    assert help_text.code == 0, f"{service}: copyjob {argv[0]} is not a command: {help_text.output}"
    for arg in argv[1:]:
        if arg.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(arg.split('=')[0])}(?![\w-])", help_text.stdout), \
                f"{service}: copyjob {argv[0]} has no {arg}"
        elif arg.startswith("/"):
            on_host = host_path(copyjob_services()[service], arg)
            assert on_host is None or on_host.exists(), f"{service}: {arg} ({on_host}) does not exist"


def test_serve_has_jobs_to_run() -> None:
    assert JOBS, "compose/jobs has no job file"
    serve = copyjob_services()["serve"]
    jobs_dir = host_path(serve, serve["command"][1])
    assert jobs_dir is not None and jobs_dir.resolve() == (COMPOSE_DIR / "jobs").resolve()


def serve_environment() -> dict[str, str]:
    return {k: str(v) for k, v in copyjob_services()["serve"].get("environment", {}).items()}


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_compose_jobs_validate(job: Path) -> None:
    """With the serve service's environment and compose/jobs/variables.yaml (the hosts are compose's: no
    --connect here)."""
    assert job.read_text().startswith("# yaml-language-server: $schema=../../docs/jobfile.schema.json\n")
    schema = job_json_schema()
    assert not list(validator_for(schema)(schema).iter_errors(yaml.safe_load(job.read_text())))
    out = copyjob("validate", job, env=serve_environment())
    assert out.code == 0, out.output


# README: Change data capture from MySQL and MariaDB → Server setup; from PostgreSQL → Setting up the source
MARIADB_SETTINGS = ("--log-bin", "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL")


def test_the_databases_get_what_change_capture_needs() -> None:
    mariadb = services()["mariadb"]["command"]
    for setting in MARIADB_SETTINGS:
        assert any(a == setting or a.startswith(setting + "=") for a in mariadb), f"mariadb needs {setting}"
    assert "wal_level=logical" in services()["postgres"]["command"]
    grants = (COMPOSE_DIR / "initdb" / "mariadb" / "10-copyjob.sql").read_text()
    for grant in ("GRANT SELECT ON shop.*", "GRANT REPLICATION SLAVE ON *.*", "GRANT BINLOG MONITOR ON *.*"):
        assert grant in grants
    assert "LOGIN REPLICATION" in (COMPOSE_DIR / "initdb" / "postgres" / "20-copyjob.sql").read_text()


# ---------------------------------------------------------------- the stack without Docker


def psql_file(server: PostgresServer, path: Path) -> None:
    subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                    str(server.port), "-U", SUPERUSER, "-d", "postgres", "-f", str(path)],
                   env={"PGPASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True,
                   timeout=120)


def test_the_sample_jobs_run_on_what_initdb_makes(tmp_path: Path, postgres_server: PostgresServer,
                                                  mariadb_server: MariadbServer, kafka_broker: KafkaBroker) -> None:
    """compose/initdb's scripts on the test servers (as the images run them: as the superuser), then every job
    in compose/jobs runs as the users they create, with compose's hosts and ports swapped for the test
    services'."""
    psql_file(postgres_server, COMPOSE_DIR / "initdb" / "postgres" / "20-copyjob.sql")
    mariadb_server.execute("CREATE DATABASE IF NOT EXISTS shop")
    init = re.sub(r"--.*$", "", (COMPOSE_DIR / "initdb" / "mariadb" / "10-copyjob.sql").read_text(), flags=re.M)
    mariadb_server.execute_all("shop", *[s for s in init.split(";") if s.strip()])
    library = tmp_path / "variables.yaml"
    library.write_text(yaml.safe_dump({"default": {
        **yaml.safe_load((COMPOSE_DIR / "jobs" / "variables.yaml").read_text())["default"],
        "PG_HOST": "127.0.0.1", "PG_PORT": str(postgres_server.port), "MARIADB_HOST": "127.0.0.1",
        "MARIADB_PORT": str(mariadb_server.port), "KAFKA": kafka_broker.bootstrap}}))
    shop = postgres_server.url("shop")
    try:
        for job in JOBS:
            out = copyjob("run", job, "--variables", library, "--state", tmp_path / "state.db",
                          env=serve_environment())
            assert out.code == 0, f"{job.name}: {out.output}"
    finally:
        drop_slots(shop)
    warehouse = postgres_server.url("warehouse")
    assert rows(warehouse, "SELECT count(*) FROM orders") == [(1000,)]
    assert rows(warehouse, "SELECT count(*) FROM customers") == [(3,)]
    assert rows(warehouse, "SELECT count(*) FROM mariadb_customers") == [(3,)]
