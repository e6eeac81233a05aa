"""Configuration of an APDB (pydantic, YAML round trip).

Settings that shape the schema (`ApdbConfig.frozen_settings`) are written to
the database's ``metadata`` table when it is created; opening the database
with a config that disagrees raises `apdb.errors.ApdbConfigMismatchError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from apdb.errors import ApdbConfigError
from apdb.schema import BANDS

__all__ = [
    "ApdbConfig",
    "CitusConfig",
    "ConnectionConfig",
    "ReplicationConfig",
    "SkyIndexConfig",
    "validation_reasons",
]

DEFAULT_URL = "sqlite:///apdb.sqlite3"


def validation_reasons(exc: ValidationError) -> str:
    """One line of ``setting: reason`` pairs from a pydantic validation error."""
    reasons = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        reasons.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(reasons)


class SkyIndexConfig(BaseModel):
    """HEALPix sky index settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index_order: int = Field(
        29,
        ge=10,
        le=29,
        description="HEALPix NESTED order of the stored pixelId column (29 as in HATS/LSDB). "
        "Shapes the schema: frozen in the database at creation.",
    )
    partition_order: int = Field(
        6,
        ge=0,
        le=12,
        description="HEALPix order of the partitionId column: the coarse pixel of a DiaObject's "
        "position when it was created, carried by its sources and forced sources (Citus "
        "distributes rows on it; order 6 pixels are about 0.9 deg). Frozen at creation.",
    )
    max_ranges: int = Field(
        64,
        ge=4,
        le=1000,
        description="Most BETWEEN ranges a region query may use; the cover order is lowered "
        "until the cover fits (Postgres picks a sequential scan beyond ~1,000).",
    )
    max_cover_order: int = Field(
        16,
        ge=2,
        le=20,
        description="Finest HEALPix order used for region covers (healpy must never be "
        "queried at very fine orders).",
    )


class ConnectionConfig(BaseModel):
    """Database connection settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool_size: int = Field(5, ge=1, description="SQLAlchemy connection pool size (PostgreSQL).")
    max_overflow: int = Field(
        5, ge=0, description="Connections allowed beyond pool_size (PostgreSQL)."
    )
    connect_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for a database connection."
    )
    sqlite_timeout: float = Field(
        60.0, gt=0, description="Seconds SQLite waits for a lock held by another process."
    )


class CitusConfig(BaseModel):
    """Settings of the Citus backend (``backend: citus``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard_count: int = Field(
        32,
        ge=1,
        le=4096,
        description="Shards of each distributed table (DiaObject, DiaSource, DiaForcedSource, "
        "SSSource, co-located on partitionId). Frozen at creation.",
    )


class ReplicationConfig(BaseModel):
    """Replica chunks (``apdb.sql.replica``): the change stream a PPDB is fed from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = Field(
        None,
        description="Write every store's row keys and every update operation's records into "
        "replica chunks (for `apdb ppdb replicate`). Frozen at creation; null (the default) "
        "creates an APDB without replication and opens whatever the database holds.",
    )
    chunk_seconds: int = Field(
        600,
        ge=1,
        le=86400,
        description="Length of a replica chunk in seconds (Rubin: 600). Frozen at creation "
        "when replication is enabled.",
    )


class ApdbConfig(BaseModel):
    """Configuration of an APDB.

    Examples
    --------
    >>> cfg = ApdbConfig(db_url="sqlite:///apdb.sqlite3")
    >>> ApdbConfig.from_yaml(cfg.to_yaml()) == cfg
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    db_url: str = Field(
        DEFAULT_URL,
        description="SQLAlchemy URL: 'sqlite:///path', 'sqlite://' (memory) or "
        "'postgresql+psycopg://user@host:port/db'.",
    )
    backend: Literal["sql", "citus"] | None = Field(
        None,
        description="'sql': tables on one server (SQLite or PostgreSQL); 'citus': a Citus "
        "cluster (PostgreSQL URL of the coordinator; the big tables are distributed on "
        "partitionId, the small ones are reference tables). Frozen at creation; null (the "
        "default) creates 'sql' and opens whatever the database holds.",
    )
    citus: CitusConfig = Field(
        default_factory=CitusConfig, description="Citus settings (used when backend is 'citus')."
    )
    sky: SkyIndexConfig = Field(
        default_factory=SkyIndexConfig, description="HEALPix sky index settings."
    )
    connection: ConnectionConfig = Field(
        default_factory=ConnectionConfig, description="Connection settings."
    )
    replication: ReplicationConfig = Field(
        default_factory=ReplicationConfig,
        description="Replica chunks for the PPDB replicator (frozen at creation).",
    )
    dia_source_history_months: int = Field(
        12,
        ge=0,
        description="Default DiaSource history window, in months of 30 days (Rubin: 12).",
    )
    dia_forced_source_history_months: int = Field(
        12,
        ge=0,
        description="Default DiaForcedSource history window, in months of 30 days.",
    )
    max_midpoint_offset_days: float = Field(
        1.0,
        gt=0,
        description="Largest allowed distance, in days, between a stored DiaSource's or "
        "DiaForcedSource's midpointMjdTai and the visit time given to store(); further "
        "raises InvalidTimeError (a wrong time or a wrong visit).",
    )
    bands: tuple[str, ...] = Field(
        BANDS,
        description="Allowed band names (the schema has per-band columns for these).",
    )
    sql_strings: Literal["reject", "allow"] = Field(
        "reject",
        description="What to do with SQL-looking free-text values (quotes, ';', '--'): "
        "'reject' raises SuspiciousStringError; 'allow' stores them verbatim (values are "
        "always bound, never formatted into SQL).",
    )

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = set(BANDS)
        bad = [b for b in value if b not in allowed]
        if bad:
            known = "".join(BANDS)
            raise ValueError(f"bands {bad} have no columns in the schema (allowed: {known})")
        return value

    # -- serialisation ----------------------------------------------------
    def to_yaml(self) -> str:
        """Return the config as YAML text."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ApdbConfig:
        """Read a config from YAML text.

        Raises
        ------
        ApdbConfigError
            The YAML is malformed or does not validate.
        """
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or "not YAML"
            raise ApdbConfigError(f"invalid APDB config: {problem}{at}") from exc
        if not isinstance(data, dict):
            raise ApdbConfigError("invalid APDB config: expected a mapping of settings")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ApdbConfigError(f"invalid APDB config: {validation_reasons(exc)}") from exc

    def save(self, path: str | Path) -> None:
        """Write the config to a YAML file."""
        Path(path).write_text(self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> ApdbConfig:
        """Read a config from a YAML file."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ApdbConfigError(f"cannot read config {path}: {exc}") from exc
        return cls.from_yaml(text)

    @model_validator(mode="after")
    def _check_partition_order(self) -> ApdbConfig:
        if self.sky.partition_order > self.sky.index_order:
            raise ValueError(
                f"sky.partition_order ({self.sky.partition_order}) cannot be finer than "
                f"sky.index_order ({self.sky.index_order})"
            )
        if self.backend == "citus" and not self.db_url.startswith("postgresql"):
            raise ValueError(
                f"backend 'citus' needs the PostgreSQL URL of the Citus coordinator, "
                f"not {self.db_url!r}"
            )
        return self

    def frozen_settings(self) -> dict[str, str]:
        """Return the settings that shape the schema, as stored in the ``metadata`` table.

        ``config:backend`` (and the Citus shard count) only when ``backend``
        is set: a config without it opens an APDB of either kind.
        """
        out = {
            "config:sky.index_order": str(self.sky.index_order),
            "config:sky.partition_order": str(self.sky.partition_order),
        }
        if self.backend is not None:
            out["config:backend"] = self.backend
        if self.backend == "citus":
            out["config:citus.shard_count"] = str(self.citus.shard_count)
        if self.replication.enabled is not None:
            out["config:replication.enabled"] = str(self.replication.enabled).lower()
        if self.replication.enabled:
            out["config:replication.chunk_seconds"] = str(self.replication.chunk_seconds)
        return out

    def creation_settings(self) -> dict[str, str]:
        """Return the frozen settings written when an APDB is created (backend defaulted)."""
        return {
            "config:backend": self.backend or "sql",
            "config:replication.enabled": "false",
            **self.frozen_settings(),
        }
