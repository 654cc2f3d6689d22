"""Connect schemas and payload values of copyjob's logical types, as Debezium's connectors write them (its
default semantic types: ``time.precision.mode: adaptive``, ``decimal.handling.mode`` from the job, ``bytes`` for
binary). The table of types is in :mod:`connectors.kafka.debezium`."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from copyjob.core.errors import DataError
from copyjob.core.schema import Column

__all__ = ["Convert", "DecimalHandling", "base64_text", "column_schema", "connect_field", "unscaled_bytes"]

DecimalHandling = Literal["precise", "string", "double"]
Convert = Callable[[Any], Any]
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_US = dt.timedelta(microseconds=1)


def connect_field(c: Column, schema: dict[str, Any], optional: bool | None = None) -> dict[str, Any]:
    """Connect's field order: type, (fields), optional, name, version, parameters, field."""
    head = {"type": schema.pop("type")}
    if "fields" in schema:
        head["fields"] = schema.pop("fields")
    return {**head, "optional": c.nullable if optional is None else optional, **schema, "field": c.name}


def _precision(c: Column, default: int) -> int:
    """The fractional digits a column declares (``timestamp(3)``, ``datetime``: 0 on MySQL), else ``default``."""
    native = c.native_type.lower()
    if "(" in native:
        inside = native.split("(", 1)[1].split(")", 1)[0]
        if inside.isdigit():
            return int(inside)
    return default


def _micros(v: Any) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, dt.datetime):
        return (v - (_EPOCH_UTC if v.tzinfo else _EPOCH)) // _US
    raise TypeError(f"not a timestamp: {v!r}")


def _days(v: Any) -> int:
    return v if isinstance(v, int) else (v - _EPOCH_DATE).days


def _time_micros(v: Any) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, dt.timedelta):  # MySQL's TIME
        return v // _US
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond


@dataclass(frozen=True)
class _Zoned:
    """ZonedTimestamp: UTC, ``Z``, ``digits`` fractional digits."""

    digits: int

    def __call__(self, v: Any) -> str:
        if isinstance(v, int):
            try:
                v = _EPOCH_UTC + v * _US
            except OverflowError:
                return "infinity" if v > 0 else "-infinity"
        v = v.astimezone(dt.UTC) if v.tzinfo else v
        text: str = v.replace(tzinfo=None).isoformat(timespec="microseconds")
        return (text[:20 + self.digits] if self.digits else text[:19]) + "Z"


def _decimal(v: Any) -> decimal.Decimal:
    return v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))


def unscaled_bytes(unscaled: int) -> bytes:
    """Java's ``BigInteger.toByteArray``: the shortest big-endian two's complement."""
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    return unscaled.to_bytes(bits // 8 + 1, "big", signed=True)


def _precise(scale: int) -> Convert:
    quantum = decimal.Decimal(1).scaleb(-scale)
    wide = decimal.Context(prec=1000)  # the default 28 digits would round wider decimals

    def convert(v: Any) -> str | None:
        d = _decimal(v)
        if not d.is_finite():
            return None
        sign, digits, exponent = d.quantize(quantum, context=wide).as_tuple()
        assert isinstance(exponent, int)
        unscaled = int("".join(map(str, digits))) * 10 ** (exponent + scale) * (-1 if sign else 1)
        return base64.b64encode(unscaled_bytes(unscaled)).decode()

    return convert


def _variable_scale(v: Any) -> dict[str, Any] | None:
    d = _decimal(v)
    if not d.is_finite():
        return None
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    scale = -exponent
    if scale < 0:  # 1E+3: Debezium's scale is never negative
        unscaled, scale = unscaled * 10 ** -scale, 0
    return {"scale": scale, "value": base64.b64encode(unscaled_bytes(unscaled)).decode()}


def _float(v: Any) -> Any:
    v = float(v)
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _plain(v: Any) -> str:
    return format(_decimal(v), "f")


def base64_text(v: Any) -> str:
    return base64.b64encode(bytes(v)).decode()


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def column_schema(c: Column, connector: str, decimals: DecimalHandling) -> tuple[dict[str, Any], Convert | None]:
    """The Connect field of a column and the function making its payload value (None: as it is)."""
    t = c.type
    k = t.kind
    zoned_default = 0 if connector in ("mysql", "mariadb") else 6
    if k in ("int16", "int32", "int64"):
        return {"type": k}, None
    if k == "float32":
        return {"type": "float"}, _float
    if k == "float64":
        return {"type": "double"}, _float
    if k == "bool":
        return {"type": "boolean"}, None
    if k == "string":
        return {"type": "string"}, _text
    if k == "uuid":
        return {"type": "string", "name": "io.debezium.data.Uuid", "version": 1}, _text
    if k == "json":
        return {"type": "string", "name": "io.debezium.data.Json", "version": 1}, _text
    if k == "binary":
        return {"type": "bytes"}, base64_text
    if k == "date":
        return {"type": "int32", "name": "io.debezium.time.Date", "version": 1}, _days
    if k == "time":
        if _precision(c, 6) <= 3:
            return {"type": "int32", "name": "io.debezium.time.Time", "version": 1}, lambda v: _time_micros(v) // 1000
        return {"type": "int64", "name": "io.debezium.time.MicroTime", "version": 1}, _time_micros
    if k == "timestamp":
        if _precision(c, 0 if connector in ("mysql", "mariadb") else 6) <= 3:
            return {"type": "int64", "name": "io.debezium.time.Timestamp", "version": 1}, lambda v: _micros(v) // 1000
        return {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "version": 1}, _micros
    if k == "timestamptz":
        return ({"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1},
                _Zoned(min(_precision(c, zoned_default), 6)))
    if k == "decimal":
        if decimals == "string":
            return {"type": "string"}, _plain
        if decimals == "double":
            return {"type": "double"}, _float
        if t.precision is None:
            return ({"type": "struct", "fields": [{"type": "int32", "optional": False, "field": "scale"},
                                                  {"type": "bytes", "optional": False, "field": "value"}],
                     "name": "io.debezium.data.VariableScaleDecimal", "version": 1, "doc": "Variable scaled decimal"},
                    _variable_scale)
        scale = t.scale or 0
        return ({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                 "parameters": {"scale": str(scale), "connect.decimal.precision": str(t.precision)}},
                _precise(scale))
    raise DataError(f"{c.name}: no Debezium type for {t}")
