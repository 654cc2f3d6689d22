"""delta-rs at the boundary: imported on first use (the ``delta`` extra), its exceptions translated into
copyjob's (copyjob/core/errors.py) with the table named and without the Rust backtrace."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import pyarrow as pa

from copyjob.core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ConnectorError,
    DataError,
    TransactionConflict,
    require,
)

T = TypeVar("T")
_BACKTRACE = re.compile(r"\n\s*0: .*", re.DOTALL)
_DENIED = ("AccessDenied", "Access Denied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden")
_UNREACHABLE = ("error sending request", "Connection refused", "dns error", "timed out", "Generic S3 error",
                "connection closed", "tcp connect error")
_REFUSED_VALUES = ("non-nullable", "Invariant violations", "Cast error", "out of range", "overflow",
                   "Schema error", "Invalid argument error")


def deltalake() -> ModuleType:
    require("deltalake", "delta")
    import deltalake as module

    return module


def short(exc: BaseException) -> str:
    """The error's message without the backtrace delta-rs appends when RUST_BACKTRACE is set."""
    return " ".join(_BACKTRACE.sub("", str(exc)).split())


def translated(action: Callable[[], T], table: object) -> T:
    """Run a delta-rs call; its errors become copyjob's, naming ``table``."""
    try:
        return action()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"Delta table {table}: {short(exc)}", table=table) from exc
    except OSError as exc:
        raise ConnectionFailed(f"Delta table {table}: {short(exc)}") from exc
    except Exception as exc:
        exceptions = deltalake().exceptions
        if not isinstance(exc, exceptions.DeltaError):
            raise
        text = short(exc)
        if any(m in text for m in _DENIED):
            raise AuthenticationFailed(f"Delta table {table}: access denied: {text}") from exc
        if isinstance(exc, exceptions.CommitFailedError):  # another writer committed first: try again
            raise TransactionConflict(f"Delta table {table}: {text}") from exc
        if any(m in text for m in _UNREACHABLE):
            raise ConnectionFailed(f"Delta table {table}: {text}") from exc
        if isinstance(exc, exceptions.SchemaMismatchError) or any(m in text for m in _REFUSED_VALUES):
            raise DataError(f"Delta table {table}: {text}", table=table) from exc
        raise ConnectorError(f"Delta table {table}: {text}") from exc
