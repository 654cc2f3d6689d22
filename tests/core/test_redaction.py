"""Redaction hides the whole password of a URL (up to the last '@' before the host) and secret parameters,
and parsing splits the userinfo the same way, so the password that is hidden is the password that is used."""

from __future__ import annotations

import pytest

from copyjob.core.redaction import redact
from copyjob.core.urls import identity, parse_url


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://loader:S3cr3tPW@at@S3cr3tPW!dst@host/db", "postgresql://loader:***@host/db"),
    ("cannot connect to postgresql://loader:S3cr3tPW@at@S3cr3tPW!dst@host:5432/db?sslmode=require: refused",
     "cannot connect to postgresql://loader:***@host:5432/db?sslmode=require: refused"),
    ("mysql://u:p@ss!w0rd@db.example:3306/shop", "mysql://u:***@db.example:3306/shop"),
    ("mariadb://u:a:b@c@h/d", "mariadb://u:***@h/d"),
    ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p@ss/x@host/db", "postgresql://u:***@host/db"),
    ("kafka://svc:pw@broker:9092", "kafka://svc:***@broker:9092"),
    ("SASL_SSL://svc:pw@broker-1:9093,SASL_SSL://svc:pw@broker-2:9093",
     "SASL_SSL://svc:***@broker-1:9093,SASL_SSL://svc:***@broker-2:9093"),
    ("s3://AKIAEXAMPLE:wJalr/XUtnFEMI@bucket/prefix", "s3://AKIAEXAMPLE:***@bucket/prefix"),
    ("s3://bucket/p?access_key=AK&secret_key=wJalr&session_token=tok",
     "s3://bucket/p?access_key=AK&secret_key=***&session_token=***"),
    ("postgresql://h/db?password=pw&sslpassword=kp&aws_secret_access_key=sk&sslmode=verify-full",
     "postgresql://h/db?password=***&sslpassword=***&aws_secret_access_key=***&sslmode=verify-full"),
    ("host=h password='a b' dbname=d", "host=h password=*** dbname=d"),
    ("{'sasl.password': 'hunter2', 'sasl.username': 'svc'}", "{'sasl.password': '***', 'sasl.username': 'svc'}"),
    ('{"a":"postgresql://u:p@h/db","b":"mysql://v:q@h2/db"}', '{"a":"postgresql://u:***@h/db","b":"mysql://v:***@h2/db"}'),
])
def test_redact_hides_every_secret(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


@pytest.mark.parametrize("text", [
    "postgresql://host:5432/db?options=a@b", "postgresql://host/db?x=a@b", "mysql://root@h/db",
    "s3://bucket/prefix@http://127.0.0.1:9000", "sqlite:///abs/sh@p.db", "no url at all: user@example.com",
])
def test_redact_leaves_texts_without_secrets_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(("raw", "user", "password", "host", "port", "database"), [
    ("postgresql://loader:S3cr3tPW@at@S3cr3tPW!dst@host:5432/db", "loader", "S3cr3tPW@at@S3cr3tPW!dst", "host",
     5432, "db"),
    ("mysql://u:pa/ss@h/shop", "u", "pa/ss", "h", None, "shop"),
    ("postgresql://u%40corp:p%2Fw@h/db", "u@corp", "p/w", "h", None, "db"),
    ("postgresql://u:@h/db", "u", "", "h", None, "db"),
    ("postgresql://h:5432/db?options=a@b", None, None, "h", 5432, "db"),
])
def test_parse_splits_userinfo_at_the_last_at(raw: str, user: str | None, password: str | None, host: str,
                                               port: int | None, database: str) -> None:
    url = parse_url(raw)
    assert (url.username, url.password, url.host, url.port, url.database) == (user, password, host, port, database)
    assert password is None or not password or password not in str(url)


def test_identity_never_holds_credentials() -> None:
    assert identity(parse_url("s3://AK:SECRET@bucket/prefix?endpoint_url=http://127.0.0.1:9000")) == \
        "s3://bucket/prefix@http://127.0.0.1:9000"
    assert identity(parse_url("postgresql://u:p@ss@h:5/db")) == "postgresql://h:5/db"
