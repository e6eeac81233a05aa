"""History chunks: DiaSource and DiaForcedSource rows also kept as per-visit Arrow chunks

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 00:00:00

- ``ApdbHistoryChunk`` (``partitionId``, ``tableName``, ``cellId``,
  ``visit``, ``detector``, ``midpointMinMjdTai``, ``midpointMaxMjdTai``,
  ``nRows``, ``data``): the rows of one table that one visit-detector wrote
  in one HEALPix cell of order 8, as one Arrow IPC stream
  (`apdb.history_chunks`).  History reads with a region read these instead
  of the rows; stores write them and update operations rebuild them in
  their own transactions.  On Citus the table is distributed on
  ``partitionId``, co-located with ``DiaObject``.  SELECT granted to
  ``apdb_reader`` on PostgreSQL.
- Backfill: the chunks of every row already stored, one visit-detector at
  a time (`apdb.sql.history.fill_missing`).  Its cost is one read of each
  row and a write of the same bytes.  Writers are not blocked (a new
  table), but visits stored by the previous code while the revision runs,
  or before the new code is rolled out, get no chunk: once the new code
  runs, `Apdb.fill_history_chunks` writes them (docs/operations.md).

- PostgreSQL: revision 0004's ``BEFORE INSERT`` triggers that fill
  ``partitionId`` for rows written without it are dropped (a PL/pgSQL call
  per inserted row, and no batched COPY inserts).  Only code older than 0004
  writes such rows, and it cannot run against 0007 either (the code of 0004
  on always writes ``partitionId``).  On Citus 0004 dropped them already.

- A PPDB (table ``PpdbReplicaChunk``) gets no chunks: its metadata key
  ``history:chunks`` is set to ``false`` and its history reads use the rows
  (the replicator copies rows, never chunks).  `apdb.sql.ppdb.create_ppdb`
  sets the same key in a new PPDB.

Downgrade drops the table (the rows are all still in the row tables) and the
``history:chunks`` key; the
triggers are not recreated (see above: no code that needs them can run at
0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from apdb import schema
from apdb.sql import history

try:  # an installed wheel ships this folder as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = schema.CHUNK_TABLE


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("partitionId", sa.Integer(), nullable=False),
        sa.Column("tableName", sa.String(length=32), nullable=False),
        sa.Column("cellId", sa.Integer(), nullable=False),
        sa.Column("visit", sa.BigInteger(), nullable=False),
        sa.Column("detector", sa.SmallInteger(), nullable=False),
        sa.Column("midpointMinMjdTai", sa.Double(), nullable=False),
        sa.Column("midpointMaxMjdTai", sa.Double(), nullable=False),
        sa.Column("nRows", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "partitionId", "tableName", "cellId", "visit", "detector", name=f"PK_{_TABLE}"
        ),
    )
    op.create_index(f"IDX_{_TABLE}_cell", _TABLE, ["tableName", "cellId", "midpointMaxMjdTai"])
    if online.is_postgres():
        citus = online.is_distributed("DiaObject")
        for table in () if citus else ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource"):
            online.drop_fill_on_insert(table, "partitionId")
        # The chunks are incompressible floats, compressed or not by us: no TOAST compression.
        op.execute(f'ALTER TABLE "{_TABLE}" ALTER COLUMN data SET STORAGE EXTERNAL')
        if citus:
            op.execute(
                sa.text(
                    "SELECT create_distributed_table(CAST(:t AS regclass), 'partitionId', "
                    "colocate_with => '\"DiaObject\"')"
                ).bindparams(t=f'"{_TABLE}"')
            )
        op.execute(f'GRANT SELECT ON "{_TABLE}" TO apdb_reader')
    if op.get_context().as_sql:  # offline: no rows to read
        return
    bind = op.get_bind()
    if sa.inspect(bind).has_table("PpdbReplicaChunk"):
        # A PPDB: the replicator copies rows, never chunks; its reads use the rows.
        op.execute(
            sa.text("INSERT INTO metadata (name, value) VALUES (:k, 'false')").bindparams(
                k=history.CHUNKS_KEY
            )
        )
        return
    stmt = sa.text("SELECT value FROM metadata WHERE name = 'config:sky.index_order'")
    index_order = int(bind.execute(stmt).scalar() or 29)
    history.fill_missing(bind, schema.make_metadata(), index_order)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM metadata WHERE name = :k").bindparams(k=history.CHUNKS_KEY))
    op.drop_index(f"IDX_{_TABLE}_cell", table_name=_TABLE)
    op.drop_table(_TABLE)
