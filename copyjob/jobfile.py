"""The job file model (pydantic v2). Field names are the user-facing contract: keep them.

A job file is loaded by :mod:`copyjob.loader`, which resolves ``${NAME}`` variables and maps validation
errors back to the file's line numbers.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["full", "incremental", "cdc"]
Method = Literal["append", "overwrite", "merge"]
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    url: str = Field(description="Connection URL: sqlite:///…, postgresql://…, mysql://…, duckdb:///…")


class CopySettings(_Strict):
    mode: Mode = "full"
    update_method: Method = "append"
    truncate_before_full_load: bool = False
    create_tables: bool = True
    batch_rows: int = Field(default=50_000, ge=100, le=5_000_000)
    parallel: int = Field(default=2, ge=1, le=32, description="readers per table for full loads")


class TableSpec(_Strict):
    name: str
    target: str | None = None
    incremental_column: str | None = None
    key: list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    mode: Mode | None = None
    update_method: Method | None = None
    truncate_before_full_load: bool | None = None

    @field_validator("name", "target")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one column")
        return v

    @property
    def target_name(self) -> str:
        return self.target or self.name


class Job(_Strict):
    job: str
    source: Endpoint
    destination: Endpoint
    copy_settings: CopySettings = Field(default_factory=CopySettings, alias="copy")
    tables: list[TableSpec] = Field(min_length=1)
    state: str | None = Field(default=None, description="state store URL (SQLite path or PostgreSQL URL)")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("job")
    @classmethod
    def _job_name(cls, v: str) -> str:
        if not _JOB_NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the state and the marker)")
        return v


class ResolvedTable(BaseModel):
    """A table entry with the job-wide defaults applied."""

    model_config = ConfigDict(frozen=True)

    index: int
    spec: TableSpec
    mode: Mode
    update_method: Method
    truncate_before_full_load: bool

    @property
    def name(self) -> str:
        return self.spec.name


def resolve_tables(job: Job) -> list[ResolvedTable]:
    c = job.copy_settings
    return [
        ResolvedTable(
            index=i, spec=t,
            mode=t.mode or c.mode,
            update_method=t.update_method or c.update_method,
            truncate_before_full_load=(
                t.truncate_before_full_load if t.truncate_before_full_load is not None
                else c.truncate_before_full_load
            ),
        )
        for i, t in enumerate(job.tables)
    ]
