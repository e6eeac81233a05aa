"""Replica chunks carry partitionId (Citus: co-located with their data); SSObject changes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 21:15:00

- ``DiaObjectChunks``, ``DiaSourceChunks`` and ``DiaForcedSourceChunks``
  gain ``partitionId`` (INTEGER, NOT NULL) after ``chunkId`` in their
  primary key: the partition of the recorded row (a DiaSourceChunks row
  naming only an SSSource takes the SSSource's).  The replicator then reads
  the rows by the data tables' own keys.  On a Citus APDB the three tables
  become distributed on ``partitionId``, co-located with ``DiaObject``: a
  store writes its chunk keys to the shards it writes anyway, and the
  replicator's read is a join on each shard (they were local to the
  coordinator: the read sent the keys to every shard and scanned them
  there).
- ``SSObjectChunks`` (``chunkId``, ``ssObjectId``): the SSObjects
  `store_ss_objects` wrote, so that SSObjects reach the PPDB too.  Local to
  the coordinator on Citus (``SSObject`` is a reference table).

The three tables are rebuilt: new table, rows copied with the partition of
their data row (chunk rows whose data row is gone are dropped: there is
nothing left to replicate), old table dropped, new one renamed.  Their
size is that of the changes not yet replicated (replicate first and it is
instant); writers wait on the rebuild and must run this revision's code
afterwards (the old code writes no ``partitionId``).

Downgrade: the reverse (``partitionId`` dropped, on Citus the tables back on
the coordinator); ``SSObjectChunks`` is dropped (its chunks' SSObject
changes are no longer recorded).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

try:  # an installed wheel ships this folder as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# chunk table -> (key columns, key types, data tables that can hold its rows)
_TABLES = {
    "DiaObjectChunks": (
        ("diaObjectId", "validityStartMjdTai"),
        (sa.BigInteger, sa.Double),
        ("DiaObject",),
    ),
    "DiaSourceChunks": (("diaSourceId",), (sa.BigInteger,), ("DiaSource", "SSSource")),
    "DiaForcedSourceChunks": (("diaForcedSourceId",), (sa.BigInteger,), ("DiaForcedSource",)),
}


def _rebuild(table: str, with_partition: bool, citus: bool = False) -> None:
    """Rebuild a chunk table with or without ``partitionId``, keeping its rows.

    With ``citus`` the new table is distributed (co-located with
    ``DiaObject``) before the rows are copied into it.
    """
    keys, types, sources = _TABLES[table]
    dialect = op.get_context().dialect.name
    new = f"{table}_0006"
    lead = ["partitionId"] if with_partition else []
    columns = [sa.Column("chunkId", sa.BigInteger(), nullable=False)]
    if with_partition:
        columns.append(sa.Column("partitionId", sa.Integer(), nullable=False))
    columns += [sa.Column(k, t(), nullable=False) for k, t in zip(keys, types, strict=True)]
    # PostgreSQL names are per schema.  Citus renames no constraint of a
    # distributed table: upgrading, the old (local) table's key gives way
    # first; downgrading, the new (local) table's key is renamed at the end.
    pk = f"PK_{new}"
    if dialect == "postgresql" and with_partition:
        op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "PK_{table}" TO "{pk}_old"')
        pk = f"PK_{table}"
    op.create_table(new, *columns, sa.PrimaryKeyConstraint("chunkId", *lead, *keys, name=pk))
    if citus:
        _distribute(new)
    # Plain table clauses (no reflection: works offline too).
    old_t = sa.table(table, *[sa.column(c) for c in ("chunkId", *keys)])
    new_t = sa.table(new, *[sa.column(c) for c in ("chunkId", *lead, *keys)])
    target = ["chunkId", *lead, *keys]
    if not with_partition:
        select = sa.select(old_t.c.chunkId, *[old_t.c[k] for k in keys]).distinct()
        op.execute(new_t.insert().from_select(target, select))
    for source in sources if with_partition else ():  # chunk rows whose data row is there
        data = sa.table(source, *[sa.column(c) for c in ("partitionId", *keys)])
        # Citus joins a distributed table with a materialized CTE of a local one.
        old = sa.select(old_t).cte("old_chunks")
        if dialect == "postgresql":
            old = old.prefix_with("MATERIALIZED")
        join = sa.and_(*[old.c[k] == data.c[k] for k in keys])
        select = sa.select(old.c.chunkId, data.c.partitionId, *[old.c[k] for k in keys])
        select = select.select_from(old.join(data, join))
        # A DiaSourceChunks row can match both its DiaSource and its SSSource.
        if dialect == "postgresql":
            insert = postgresql.insert(new_t).from_select(target, select)
            op.execute(insert.on_conflict_do_nothing())
        else:
            op.execute(new_t.insert().prefix_with("OR IGNORE").from_select(target, select))
    op.drop_table(table)
    op.rename_table(new, table)
    if dialect == "postgresql":
        if pk != f"PK_{table}":
            op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{pk}" TO "PK_{table}"')
        op.execute(f'GRANT SELECT ON "{table}" TO apdb_reader')


def _distribute(table: str) -> None:
    op.execute(
        sa.text(
            "SELECT create_distributed_table(CAST(:t AS regclass), 'partitionId', "
            "colocate_with => '\"DiaObject\"')"
        ).bindparams(t=f'"{table}"')
    )


def upgrade() -> None:
    citus = online.is_distributed("DiaObject")
    for table in _TABLES:
        _rebuild(table, with_partition=True, citus=citus)
    op.create_table(
        "SSObjectChunks",
        sa.Column("chunkId", sa.BigInteger(), nullable=False),
        sa.Column("ssObjectId", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chunkId", "ssObjectId", name=op.f("PK_SSObjectChunks")),
    )
    if online.is_postgres():
        op.execute('GRANT SELECT ON "SSObjectChunks" TO apdb_reader')


def downgrade() -> None:
    op.drop_table("SSObjectChunks")
    for table in _TABLES:
        _rebuild(table, with_partition=False)
