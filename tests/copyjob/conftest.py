"""Fixtures shared by the tests of the application."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts ``copyjob serve|monitor … --http 127.0.0.1:0`` processes (tests.copyjob.test_monitor.Process);
    kills them at the end of the test."""
    from tests.copyjob.test_monitor import Process

    started: list[Process] = []

    def begin(*args: str | Path, env: dict[str, str] | None = None) -> Process:
        started.append(Process(tmp_path, *args, env=env))
        return started[-1]

    yield begin
    for p in started:
        p.kill()
