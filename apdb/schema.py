"""The APDB schema: SQLAlchemy Core `MetaData` with Rubin's column names and types.

Columns come from Rubin's ``apdb.yaml`` (``apdb/_rubin_columns.py``, checked
against the installed ``lsst-sdm-schemas`` by the tests).  Additions of ours:

- ``pixelId`` (BIGINT, NOT NULL, btree index) on `DiaObject`, `DiaSource` and
  `DiaForcedSource`: the HEALPix NESTED index of (ra, dec) at the configured
  order, computed on write (`apdb.sky`).
- Indexes differ from Rubin's where it speeds up the visit cycle: the index
  on ``DiaObject.validityStartMjdTai`` is partial (latest versions only: the
  deduplication read is its one user), a partial index on
  ``DiaSource.ssObjectId`` (most rows have none).
- `DiaObject` keeps every version: the latest one has ``validityEndMjdTai IS
  NULL``; a partial unique index on ``diaObjectId`` and a partial index on
  ``pixelId`` over those rows make "latest objects in a region" cheap.
- ``ApdbVisitDetector``: one row per stored (visit, detector); its primary key
  is what refuses a visit stored twice, even by concurrent processes.
- ``metadata``: Rubin's name/value table (schema version, frozen config).
- ``partitionId`` (INTEGER, NOT NULL) on `DiaObject`, `DiaSource`,
  `DiaForcedSource` and `SSSource`: the HEALPix pixel at the coarse
  ``sky.partition_order`` of the object's position when it was created,
  copied to its sources (sources without an object use their own position);
  computed on write (`apdb.sql.citus`).  On a Citus APDB these tables are
  distributed on it, co-located, and their keys start with it.
- ``DiaObject_To_Object_Match``: Rubin's columns and ``objectId`` index; a
  primary key on (``diaObjectId``, ``objectId``) where Rubin has only an
  index on ``diaObjectId`` (a pair is stored once; logical replication needs
  a key).

`create_all` is for throwaway databases only; real ones change through the
alembic revisions in ``migrations/``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from apdb._rubin_columns import RUBIN_COLUMNS, RUBIN_SCHEMA_VERSION
from apdb.replica_schema import add_replica_tables

__all__ = [
    "BANDS",
    "CHUNK_TABLE",
    "HISTORY_TABLES",
    "NAMING_CONVENTION",
    "PARTITIONED_TABLES",
    "RUBIN_SCHEMA_VERSION",
    "ColumnInfo",
    "ApdbTables",
    "add_history_table",
    "column_info",
    "make_metadata",
    "metadata",
    "required_columns",
    "table_columns",
]

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

NAMING_CONVENTION = {
    "ix": "IDX_%(table_name)s_%(column_0_N_name)s",
    "uq": "UQ_%(table_name)s_%(column_0_N_name)s",
    "ck": "CK_%(table_name)s_%(constraint_name)s",
    "fk": "FK_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "PK_%(table_name)s",
}


class ApdbTables(enum.StrEnum):
    """Names of the APDB tables."""

    DiaObject = "DiaObject"
    DiaSource = "DiaSource"
    DiaForcedSource = "DiaForcedSource"
    SSObject = "SSObject"
    SSSource = "SSSource"
    ApdbVisitDetector = "ApdbVisitDetector"
    metadata = "metadata"
    DiaObject_To_Object_Match = "DiaObject_To_Object_Match"


_SA_TYPES = {
    "long": sa.BigInteger,
    "int": sa.Integer,
    "short": sa.SmallInteger,
    "double": sa.Double,
    "float": sa.REAL,
    "boolean": sa.Boolean,
}

# numpy dtypes of each Felis type (nullable integers/booleans use pandas'
# masked dtypes when read back; see ColumnInfo.pandas_dtype).
_NP_DTYPES = {
    "long": np.dtype("int64"),
    "int": np.dtype("int32"),
    "short": np.dtype("int16"),
    "double": np.dtype("float64"),
    "float": np.dtype("float32"),
    "boolean": np.dtype("bool"),
    "char": np.dtype("O"),
    "string": np.dtype("O"),
    "text": np.dtype("O"),
}

# NOT NULL columns that `Apdb.store` fills itself when the input lacks them.
# (They are not server defaults: the database schema stays Rubin's.)
_STORE_DEFAULTS: dict[str, dict[str, object]] = {
    "DiaObject": {
        "validityStartMjdTai": "visit_time",
        **{f"{b}_psfFluxNdata": 0 for b in BANDS},
    },
    "DiaSource": {
        "psfNdata": 0,
        "dipoleNdata": 0,
        "trailNdata": 0,
        "timeProcessedMjdTai": "now",
    },
    "DiaForcedSource": {"timeProcessedMjdTai": "now"},
    "SSObject": {
        "nObs": 0,
        "arc": 0.0,
        **{f"{b}_{c}": 0 for b in BANDS for c in ("nObs", "nObsUsed")},
    },
}

# Columns the store computes itself (input values are ignored).
COMPUTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "DiaObject": ("pixelId", "validityStartMjdTai", "validityEndMjdTai", "partitionId"),
    "DiaSource": ("pixelId", "partitionId"),
    "DiaForcedSource": ("pixelId", "partitionId"),
    "SSSource": ("partitionId",),
}

# Tables with a ``partitionId`` column (revision 0004): the coarse HEALPix
# pixel (``sky.partition_order``) of the DiaObject's position when it was
# created, carried by its sources; Citus distributes these tables on it.
PARTITIONED_TABLES: tuple[str, ...] = ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource")


@dataclass(frozen=True)
class ColumnInfo:
    """Description of one column.

    Attributes
    ----------
    name : `str`
        Column name.
    datatype : `str`
        Felis datatype (``long``, ``int``, ``short``, ``double``, ``float``,
        ``boolean``, ``char``, ``string``, ``text``).
    nullable : `bool`
        Whether NULL is allowed.
    length : `int` or `None`
        Length of ``char``/``string`` columns.
    """

    name: str
    datatype: str
    nullable: bool
    length: int | None = None

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of the values (object for strings)."""
        return _NP_DTYPES[self.datatype]

    @property
    def pandas_dtype(self) -> str:
        """The pandas dtype used in DataFrames returned by `Apdb` reads.

        Floats are ``float32``/``float64`` with NULL read as NaN; NOT NULL
        integers and booleans are plain numpy dtypes; nullable ones use pandas'
        masked ``Int64``/``Int32``/``Int16``/``boolean``; strings are ``object``.
        """
        if self.datatype in ("double", "float"):
            return str(self.numpy_dtype)
        if self.datatype in ("long", "int", "short"):
            return "I" + str(self.numpy_dtype)[1:] if self.nullable else str(self.numpy_dtype)
        if self.datatype == "boolean":
            return "boolean" if self.nullable else "bool"
        return "object"

    def sa_type(self) -> sa.types.TypeEngine:
        """Return the SQLAlchemy type."""
        if self.datatype == "char":
            return sa.CHAR(self.length)
        if self.datatype == "string":
            return sa.VARCHAR(self.length)
        if self.datatype == "text":
            return sa.Text()
        return _SA_TYPES[self.datatype]()


def _columns_of(table: str) -> list[ColumnInfo]:
    cols = [ColumnInfo(n, t, nl, ln) for n, t, nl, ln in RUBIN_COLUMNS.get(table, [])]
    if table in ("DiaObject", "DiaSource", "DiaForcedSource"):
        cols.append(ColumnInfo("pixelId", "long", False))
    if table in PARTITIONED_TABLES:
        cols.append(ColumnInfo("partitionId", "int", False))
    if table == "ApdbVisitDetector":
        cols = [
            ColumnInfo("visit", "long", False),
            ColumnInfo("detector", "short", False),
            ColumnInfo("midpointMjdTai", "double", False),
            ColumnInfo("timeProcessedMjdTai", "double", False),
            ColumnInfo("nDiaSources", "int", False),
            ColumnInfo("nDiaForcedSources", "int", False),
            ColumnInfo("nDiaObjects", "int", False),
        ]
    if table == "metadata":
        cols = [ColumnInfo("name", "text", False), ColumnInfo("value", "text", False)]
    return cols


_COLUMNS: dict[str, list[ColumnInfo]] = {t.value: _columns_of(t.value) for t in ApdbTables}


def table_columns(table: str) -> list[ColumnInfo]:
    """Return the columns of a table, in schema order.

    Parameters
    ----------
    table : `str`
        Table name (an `ApdbTables` value).
    """
    return list(_COLUMNS[str(table)])


def column_info(table: str, column: str) -> ColumnInfo:
    """Return the description of one column."""
    for col in _COLUMNS[str(table)]:
        if col.name == column:
            return col
    raise KeyError(f"{table} has no column {column!r}")


def store_defaults(table: str) -> dict[str, object]:
    """NOT NULL columns that `Apdb.store` fills when the input lacks them.

    Values are constants, or the markers ``"visit_time"`` / ``"now"`` (MJD TAI).
    """
    return dict(_STORE_DEFAULTS.get(str(table), {}))


def required_columns(table: str) -> list[str]:
    """Columns an input DataFrame for ``table`` must have."""
    defaults = _STORE_DEFAULTS.get(str(table), {})
    computed = COMPUTED_COLUMNS.get(str(table), ())
    return [
        c.name
        for c in _COLUMNS[str(table)]
        if not c.nullable and c.name not in defaults and c.name not in computed
    ]


def _table(md: sa.MetaData, name: str, *extra: sa.SchemaItem) -> sa.Table:
    cols = [sa.Column(c.name, c.sa_type(), nullable=c.nullable) for c in _COLUMNS[name]]
    return sa.Table(name, md, *cols, *extra)


def make_metadata(schema: str | None = None, citus: bool = False) -> sa.MetaData:
    """Build the APDB `MetaData`.

    Parameters
    ----------
    schema : `str`, optional
        Database schema (namespace) of the tables; `None` for the default.
    citus : `bool`, optional
        The keys of a Citus APDB (revision 0004): primary and unique keys of
        the distributed tables start with ``partitionId``, as Citus requires;
        plain indexes on the source ids (revision 0007).
    """
    md = sa.MetaData(naming_convention=NAMING_CONVENTION, schema=schema)
    lead = ("partitionId",) if citus else ()
    latest = sa.column("validityEndMjdTai").is_(None)
    has_sso = sa.column("ssObjectId").is_not(None)
    _table(
        md,
        "DiaObject",
        sa.PrimaryKeyConstraint(*lead, "diaObjectId", "validityStartMjdTai"),
        sa.Index(
            "IDX_DiaObject_last_diaObjectId",
            *lead,
            "diaObjectId",
            unique=True,
            postgresql_where=latest,
            sqlite_where=latest,
        ),
        sa.Index(
            "IDX_DiaObject_last_pixelId",
            "pixelId",
            postgresql_where=latest,
            sqlite_where=latest,
        ),
        sa.Index(
            "IDX_DiaObject_last_validityStartMjdTai",
            "validityStartMjdTai",
            postgresql_where=latest,
            sqlite_where=latest,
        ),
    )
    _table(
        md,
        "DiaSource",
        sa.PrimaryKeyConstraint(*lead, "diaSourceId"),
        sa.Index("IDX_DiaSource_visitDetector", "visit", "detector"),
        sa.Index("IDX_DiaSource_diaObjectId", "diaObjectId"),
        sa.Index(
            "IDX_DiaSource_ssObjectId",
            "ssObjectId",
            postgresql_where=has_sso,
            sqlite_where=has_sso,
        ),
        sa.Index("IDX_DiaSource_pixelId", "pixelId"),
        # Citus (revision 0007): reused ids are looked up across partitions
        *([sa.Index("IDX_DiaSource_diaSourceId", "diaSourceId")] if citus else []),
    )
    _table(
        md,
        "DiaForcedSource",
        sa.PrimaryKeyConstraint(*lead, "diaObjectId", "visit", "detector"),
        sa.UniqueConstraint(
            *lead, "diaForcedSourceId", name="UQ_DiaForcedSource_diaForcedSourceId"
        ),
        sa.Index("IDX_DiaForcedSource_visitDetector", "visit", "detector"),
        sa.Index("IDX_DiaForcedSource_pixelId", "pixelId"),
        *(
            [sa.Index("IDX_DiaForcedSource_diaForcedSourceId", "diaForcedSourceId")]
            if citus
            else []
        ),
    )
    _table(
        md,
        "SSObject",
        sa.PrimaryKeyConstraint("ssObjectId"),
        sa.Index("IDX_SSObject_MOIDEarth", "MOIDEarth"),
    )
    _table(
        md,
        "SSSource",
        sa.PrimaryKeyConstraint(*lead, "diaSourceId"),
        sa.Index("IDX_SSSource_ssObjectId", "ssObjectId"),
        sa.Index("IDX_SSSource_designation", "designation"),
    )
    _table(md, "ApdbVisitDetector", sa.PrimaryKeyConstraint("visit", "detector"))
    _table(md, "metadata", sa.PrimaryKeyConstraint("name"))
    _table(
        md,
        "DiaObject_To_Object_Match",
        sa.PrimaryKeyConstraint("diaObjectId", "objectId"),
        sa.Index("IDX_DiaObjectToObjectMatch_objectId", "objectId"),
    )
    add_replica_tables(md)  # revision 0005
    add_history_table(md)  # revision 0008
    return md


CHUNK_TABLE = "ApdbHistoryChunk"
"""Table of the history chunks (`apdb.history_chunks`, revision 0008)."""
HISTORY_TABLES: tuple[str, ...] = ("DiaSource", "DiaForcedSource")
"""Tables whose rows are also kept as history chunks."""


def add_history_table(md: sa.MetaData) -> sa.Table:
    """Add `CHUNK_TABLE` to ``md`` (revision 0008).

    One row per (table, partition, cell, visit, detector) holding those rows
    as one Arrow IPC stream (`apdb.history_chunks`).  ``partitionId`` leads
    the key: on Citus the table is distributed and co-located with the rows.
    """
    return sa.Table(
        CHUNK_TABLE,
        md,
        sa.Column("partitionId", sa.Integer, nullable=False),
        sa.Column("tableName", sa.String(32), nullable=False),
        sa.Column("cellId", sa.Integer, nullable=False),
        sa.Column("visit", sa.BigInteger, nullable=False),
        sa.Column("detector", sa.SmallInteger, nullable=False),
        sa.Column("midpointMinMjdTai", sa.Double, nullable=False),
        sa.Column("midpointMaxMjdTai", sa.Double, nullable=False),
        sa.Column("nRows", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("partitionId", "tableName", "cellId", "visit", "detector"),
        sa.Index("IDX_ApdbHistoryChunk_cell", "tableName", "cellId", "midpointMaxMjdTai"),
    )


metadata: sa.MetaData = make_metadata()
"""The APDB `MetaData` (default schema); alembic's target metadata."""
