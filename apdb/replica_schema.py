"""Tables of the replica chunks (revision 0005): the APDB's change stream.

A *replica chunk* is a time bucket of ``replication.chunk_seconds`` seconds;
its id (``chunkId``) is the Unix time in seconds of its start.  When
replication is enabled (``config:replication.enabled``), every write
transaction records what it changed in the chunk of its own wall-clock time:

- ``ApdbReplicaChunks``: one row per chunk that received anything;
- ``DiaObjectChunks``, ``DiaSourceChunks``, ``DiaForcedSourceChunks``: the
  keys of the rows a `store` inserted or modified (keys only: the replicator
  reads the rows themselves from the tables); ``DiaSourceChunks`` also names
  the ``SSSource`` rows (same key);
- ``ApdbUpdateRecordChunks``: one record per update operation (reassign,
  validity end, withdrawal, ...), ordered by (``updateTimeNs``,
  ``updateOrder``), with a JSON payload of the resulting column values.

Rubin's dax_apdb has the same concept (``ApdbReplica``); the table layout is
ours.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

__all__ = ["ReplicaTables", "add_replica_tables", "chunk_key_columns"]


class ReplicaTables(enum.StrEnum):
    """Names of the replica chunk tables."""

    ApdbReplicaChunks = "ApdbReplicaChunks"
    DiaObjectChunks = "DiaObjectChunks"
    DiaSourceChunks = "DiaSourceChunks"
    DiaForcedSourceChunks = "DiaForcedSourceChunks"
    ApdbUpdateRecordChunks = "ApdbUpdateRecordChunks"


# data table -> (its chunk table, key columns of the data table)
_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "DiaObject": ("DiaObjectChunks", ("diaObjectId", "validityStartMjdTai")),
    "DiaSource": ("DiaSourceChunks", ("diaSourceId",)),
    "DiaForcedSource": ("DiaForcedSourceChunks", ("diaForcedSourceId",)),
}


def chunk_key_columns(table: str) -> tuple[str, tuple[str, ...]]:
    """``(chunk table, key columns)`` of a data table (DiaObject, DiaSource, DiaForcedSource).

    Raises
    ------
    KeyError
        ``table`` has no chunk table.
    """
    return _KEYS[str(table)]


def add_replica_tables(md: sa.MetaData) -> None:
    """Add the replica chunk tables to ``md``."""
    sa.Table(
        "ApdbReplicaChunks",
        md,
        sa.Column("chunkId", sa.BigInteger, nullable=False),
        sa.Column("createdTime", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("chunkId"),
    )
    sa.Table(
        "DiaObjectChunks",
        md,
        sa.Column("chunkId", sa.BigInteger, nullable=False),
        sa.Column("diaObjectId", sa.BigInteger, nullable=False),
        sa.Column("validityStartMjdTai", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "diaObjectId", "validityStartMjdTai"),
    )
    sa.Table(
        "DiaSourceChunks",
        md,
        sa.Column("chunkId", sa.BigInteger, nullable=False),
        sa.Column("diaSourceId", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "diaSourceId"),
    )
    sa.Table(
        "DiaForcedSourceChunks",
        md,
        sa.Column("chunkId", sa.BigInteger, nullable=False),
        sa.Column("diaForcedSourceId", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "diaForcedSourceId"),
    )
    sa.Table(
        "ApdbUpdateRecordChunks",
        md,
        sa.Column("chunkId", sa.BigInteger, nullable=False),
        sa.Column("updateTimeNs", sa.BigInteger, nullable=False),
        sa.Column("updateOrder", sa.Integer, nullable=False),
        sa.Column("uniqueId", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "updateTimeNs", "updateOrder", "uniqueId"),
    )
