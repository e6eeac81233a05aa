"""Citus: indexes on diaSourceId and diaForcedSourceId, so a reused id is found cheaply

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 22:00:00

On a Citus APDB the keys of ``DiaSource`` and ``DiaForcedSource`` start with
``partitionId`` (the distribution column), so they do not refuse an id
stored under another partition; the store checks the ids of each batch on
every shard before inserting them (`apdb.sql.citus.refuse_ids_stored_elsewhere`).
Without an index that starts with the id, that check scans each shard's key
index, a cost that grows with the history.  This revision adds
``IDX_DiaSource_diaSourceId`` and ``IDX_DiaForcedSource_diaForcedSourceId``
(plain, not unique: Citus cannot enforce uniqueness without the distribution
column), built concurrently on a live database.

PostgreSQL and SQLite: nothing to do (their primary key / unique constraint
starts with the id).  Offline (``--sql``) nothing is rendered: whether the
database is a Citus APDB is only known when connected.

Downgrade: the two indexes are dropped (Citus only).
"""

from collections.abc import Sequence

try:  # an installed wheel ships this folder as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# index name -> (table, column); the same list as apdb.schema.make_metadata(citus=True)
_INDEXES = {
    "IDX_DiaSource_diaSourceId": ("DiaSource", "diaSourceId"),
    "IDX_DiaForcedSource_diaForcedSourceId": ("DiaForcedSource", "diaForcedSourceId"),
}


def upgrade() -> None:
    if not online.is_distributed("DiaSource"):
        return
    for name, (table, column) in _INDEXES.items():
        online.create_index_online(name, table, [column])


def downgrade() -> None:
    if not online.is_distributed("DiaSource"):
        return
    for name, (table, _) in _INDEXES.items():
        online.drop_index_online(name, table)
