"""Tables of the replica chunks (revisions 0005, 0006): the APDB's change stream.

A *replica chunk* is a time bucket of ``replication.chunk_seconds`` seconds;
its id (``chunkId``) is the Unix time in seconds of its start.  When
replication is enabled (``config:replication.enabled``), every write
transaction records what it changed in the chunk of its own wall-clock time:

- ``ApdbReplicaChunks``: one row per chunk that received anything;
- ``DiaObjectChunks``, ``DiaSourceChunks``, ``DiaForcedSourceChunks``: the
  ``partitionId`` and keys of the rows a `store` inserted or modified (keys
  only: the replicator reads the rows themselves from the tables);
  ``DiaSourceChunks`` also names the ``SSSource`` rows (same key and
  partition).  On Citus they are distributed on ``partitionId``, co-located
  with their data tables, so the replicator's read is a shard-local join
  on the data table's primary key (revision 0006);
- ``SSObjectChunks``: the ``ssObjectId`` of the SSObjects `store_ss_objects`
  wrote (revision 0006);
- ``ApdbUpdateRecordChunks``: one record per update operation (reassign,
  validity end, withdrawal, ...), ordered by (``updateTimeNs``,
  ``updateOrder``), with a JSON payload of the resulting column values.

``ApdbReplicaChunks``, ``ApdbUpdateRecordChunks`` and ``SSObjectChunks`` are
small control tables, written once per transaction and never joined with a
distributed table: on Citus they stay local to the coordinator.

Rubin's dax_apdb has the same concept (``ApdbReplica``); the table layout is
ours.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

__all__ = [
    "DISTRIBUTED_CHUNK_TABLES",
    "ReplicaTables",
    "add_replica_tables",
    "chunk_key_columns",
    "chunk_table_columns",
]


class ReplicaTables(enum.StrEnum):
    """Names of the replica chunk tables."""

    ApdbReplicaChunks = "ApdbReplicaChunks"
    DiaObjectChunks = "DiaObjectChunks"
    DiaSourceChunks = "DiaSourceChunks"
    DiaForcedSourceChunks = "DiaForcedSourceChunks"
    SSObjectChunks = "SSObjectChunks"
    ApdbUpdateRecordChunks = "ApdbUpdateRecordChunks"


# data table -> (its chunk table, whether the chunk rows carry partitionId, key columns)
_KEYS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "DiaObject": ("DiaObjectChunks", True, ("diaObjectId", "validityStartMjdTai")),
    "DiaSource": ("DiaSourceChunks", True, ("diaSourceId",)),
    "DiaForcedSource": ("DiaForcedSourceChunks", True, ("diaForcedSourceId",)),
    "SSObject": ("SSObjectChunks", False, ("ssObjectId",)),
}
# SSSource rows are recorded in DiaSourceChunks (their key is their DiaSource's).
_KEYS["SSSource"] = _KEYS["DiaSource"]

_KEY_TYPES = {"validityStartMjdTai": sa.Double}

DISTRIBUTED_CHUNK_TABLES = tuple(
    chunk for table, (chunk, partitioned, _) in _KEYS.items() if partitioned and table != "SSSource"
)
"""Chunk tables distributed on ``partitionId`` on Citus (co-located with DiaObject)."""


def chunk_key_columns(table: str) -> tuple[str, tuple[str, ...]]:
    """``(chunk table, key columns)`` of a replicated data table.

    The key columns identify a row of ``table``; the chunk tables of the
    partitioned tables also carry ``partitionId`` (`chunk_table_columns`).

    Raises
    ------
    KeyError
        ``table`` has no chunk table.
    """
    chunk, _, keys = _KEYS[str(table)]
    return chunk, keys


def chunk_table_columns(table: str) -> tuple[str, ...]:
    """Columns of ``table``'s chunk rows besides ``chunkId`` (``partitionId`` first, if any)."""
    _, partitioned, keys = _KEYS[str(table)]
    return ("partitionId", *keys) if partitioned else keys


def add_replica_tables(md: sa.MetaData) -> None:
    """Add the replica chunk tables to ``md``."""
    chunk_id = "chunkId"
    sa.Table(
        ReplicaTables.ApdbReplicaChunks,
        md,
        sa.Column(chunk_id, sa.BigInteger, nullable=False),
        sa.Column("createdTime", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint(chunk_id),
    )
    for table in ("DiaObject", "DiaSource", "DiaForcedSource", "SSObject"):
        chunk, _ = chunk_key_columns(table)
        cols = chunk_table_columns(table)
        sa.Table(
            chunk,
            md,
            sa.Column(chunk_id, sa.BigInteger, nullable=False),
            *[
                sa.Column(
                    c,
                    sa.Integer if c == "partitionId" else _KEY_TYPES.get(c, sa.BigInteger),
                    nullable=False,
                )
                for c in cols
            ],
            sa.PrimaryKeyConstraint(chunk_id, *cols),
        )
    sa.Table(
        ReplicaTables.ApdbUpdateRecordChunks,
        md,
        sa.Column(chunk_id, sa.BigInteger, nullable=False),
        sa.Column("updateTimeNs", sa.BigInteger, nullable=False),
        sa.Column("updateOrder", sa.Integer, nullable=False),
        sa.Column("uniqueId", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint(chunk_id, "updateTimeNs", "updateOrder", "uniqueId"),
    )
