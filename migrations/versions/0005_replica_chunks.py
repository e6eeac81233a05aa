"""Replica chunks: the change stream a PPDB is fed from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 18:45:00

- ``ApdbReplicaChunks`` (one row per chunk), ``DiaObjectChunks``,
  ``DiaSourceChunks``, ``DiaForcedSourceChunks`` (keys of the rows a store
  wrote, per chunk) and ``ApdbUpdateRecordChunks`` (ordered update records
  with a JSON payload); see `apdb.replica_schema`.  SELECT granted to
  ``apdb_reader`` on PostgreSQL.
- ``metadata`` gains ``config:replication.enabled`` = ``false`` when it is
  missing (databases created before this revision); a database being
  created records its own first.

Online: only new (empty) tables are created and granted, so no lock is
taken on the big tables and writers are never blocked; the
`migrations.online` helpers are not needed.  On Citus the new tables stay
local to the coordinator.

Downgrade drops the five tables (the chunks not yet replicated are lost:
replicate first); the metadata value is kept, so an upgrade again restores
the same setting.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

try:  # an installed wheel ships this folder as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "ApdbReplicaChunks",
    "DiaObjectChunks",
    "DiaSourceChunks",
    "DiaForcedSourceChunks",
    "ApdbUpdateRecordChunks",
)


def _create_tables() -> None:
    op.create_table(
        "ApdbReplicaChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("createdTime", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("chunkId", name=op.f("PK_ApdbReplicaChunks")),
    )
    op.create_table(
        "DiaObjectChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("diaObjectId", sa.BigInteger(), nullable=False),
        sa.Column("validityStartMjdTai", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint(
            "chunkId", "diaObjectId", "validityStartMjdTai", name=op.f("PK_DiaObjectChunks")
        ),
    )
    op.create_table(
        "DiaSourceChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("diaSourceId", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "diaSourceId", name=op.f("PK_DiaSourceChunks")),
    )
    op.create_table(
        "DiaForcedSourceChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("diaForcedSourceId", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "chunkId", "diaForcedSourceId", name=op.f("PK_DiaForcedSourceChunks")
        ),
    )
    op.create_table(
        "ApdbUpdateRecordChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("updateTimeNs", sa.BigInteger(), nullable=False),
        sa.Column("updateOrder", sa.Integer(), nullable=False),
        sa.Column("uniqueId", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "chunkId",
            "updateTimeNs",
            "updateOrder",
            "uniqueId",
            name=op.f("PK_ApdbUpdateRecordChunks"),
        ),
    )


def upgrade() -> None:
    _create_tables()
    op.execute(
        "INSERT INTO metadata (name, value) SELECT 'config:replication.enabled', 'false' "
        "WHERE NOT EXISTS (SELECT 1 FROM metadata WHERE name = 'config:replication.enabled')"
    )
    if online.is_postgres():
        for table in _TABLES:
            op.execute(f'GRANT SELECT ON "{table}" TO apdb_reader')


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
