"""The one commit order (Checkpoint), the one retry policy and the state scope."""

from __future__ import annotations

import pytest

from copyjob.core.checkpoint import Checkpoint
from copyjob.core.errors import AuthenticationFailed, ConnectionFailed, DataError, error_text
from copyjob.core.retry import retrying
from copyjob.core.scope import MAX_LENGTH, split_scope, state_scope
from copyjob.core.urls import identity, parse_url


def test_checkpoint_runs_durable_then_save_then_ack() -> None:
    steps: list[str] = []
    checkpoint = Checkpoint(save=lambda: steps.append("save"), ack=lambda p: steps.append(f"ack {p['n']}"))
    assert checkpoint.commit(lambda: steps.append("durable") or 7, {"n": 1}) == 7
    assert steps == ["durable", "save", "ack 1"]


@pytest.mark.parametrize("failing", ["durable", "save"])
def test_a_failed_step_skips_the_steps_after_it(failing: str) -> None:
    steps: list[str] = []

    def step(name: str) -> None:
        if name == failing:
            raise DataError(f"{name} failed")
        steps.append(name)

    checkpoint = Checkpoint(save=lambda: step("save"), ack=lambda p: step("ack"))
    with pytest.raises(DataError):
        checkpoint.commit(lambda: step("durable"), {"n": 1})
    assert "ack" not in steps
    assert steps == ([] if failing == "durable" else ["durable"])


def test_nothing_to_acknowledge_without_a_position() -> None:
    acks: list[object] = []
    Checkpoint(ack=acks.append).commit(lambda: None)
    assert acks == []


def test_retriable_errors_are_retried_terminal_ones_raised_at_once() -> None:
    calls, sleeps = [0], []

    def flaky() -> str:
        calls[0] += 1
        if calls[0] < 3:
            raise ConnectionFailed("connection reset")
        return "ok"

    assert retrying(flaky, "t", sleep=sleeps.append) == "ok"
    assert calls == [3] and sleeps == [2, 4]

    def denied() -> None:
        calls[0] += 1
        raise AuthenticationFailed("password authentication failed")

    calls[0] = 0
    with pytest.raises(AuthenticationFailed):
        retrying(denied, "t", sleep=sleeps.append)
    assert calls == [1]


def test_retries_give_up_after_the_last_attempt() -> None:
    calls = [0]

    def down() -> None:
        calls[0] += 1
        raise ConnectionFailed("down")

    with pytest.raises(ConnectionFailed):
        retrying(down, "t", attempts=3, sleep=lambda s: None)
    assert calls == [3]


def test_error_text_redacts_and_names_foreign_types() -> None:
    assert error_text(ConnectionFailed("postgresql://u:secret@h/db refused")) == "postgresql://u:***@h/db refused"
    assert error_text(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://loader:pw@db.prod:5432/shop?sslmode=require", "postgresql://db.prod:5432/shop"),
    ("mysql://root@127.0.0.1/app", "mysql://127.0.0.1/app"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
])
def test_identity_leaves_out_credentials_and_options(url: str, expected: str) -> None:
    assert identity(parse_url(url)) == expected


def test_identity_of_a_file_is_its_absolute_path(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    assert identity(parse_url("sqlite:///dst.db", base)) == f"sqlite://{(base / 'dst.db').resolve()}"


def test_scope_round_trip_and_length() -> None:
    assert split_scope(state_scope("orders", "postgresql://h/db")) == ("orders", "postgresql://h/db")
    assert split_scope("legacy") == ("legacy", None)
    long = state_scope("j", "sqlite:///" + "x" * 400)
    assert len(long) <= MAX_LENGTH and long != state_scope("j", "sqlite:///" + "x" * 399 + "y")
