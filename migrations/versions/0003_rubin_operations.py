"""Rubin APDB operations: DiaObject_To_Object_Match, deduplication index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 17:40:00

- ``DiaObject_To_Object_Match`` (Rubin's apdb.yaml columns ``diaObjectId``,
  ``objectId``, ``dist``, ``lnP``): primary key (diaObjectId, objectId), index
  on ``objectId``; SELECT granted to ``apdb_reader`` on PostgreSQL.
- ``IDX_DiaObject_last_validityStartMjdTai``: partial index over the latest
  DiaObject versions, for `Apdb.get_dia_objects_for_dedup`.

Downgrade drops both; rows of the other tables are untouched.

Online (PostgreSQL): the DiaObject index is built and dropped CONCURRENTLY
(`migrations.online`), so writers are not blocked while it is built; the
other steps touch only the new table and wait at most ``lock_timeout``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

try:  # an installed wheel ships this folder as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MATCH = "DiaObject_To_Object_Match"
_LATEST = sa.text('"validityEndMjdTai" IS NULL')


def upgrade() -> None:
    # First, as it commits on its own (concurrent build, outside a
    # transaction) and can be repeated if the rest fails.
    online.create_index_online(
        "IDX_DiaObject_last_validityStartMjdTai",
        "DiaObject",
        ["validityStartMjdTai"],
        where='"validityEndMjdTai" IS NULL',
    )
    op.create_table(
        _MATCH,
        sa.Column("diaObjectId", sa.BigInteger(), nullable=False),
        sa.Column("objectId", sa.BigInteger(), nullable=False),
        sa.Column("dist", sa.REAL(), nullable=True),
        sa.Column("lnP", sa.REAL(), nullable=True),
        sa.PrimaryKeyConstraint("diaObjectId", "objectId", name=op.f(f"PK_{_MATCH}")),
    )
    op.create_index("IDX_DiaObjectToObjectMatch_objectId", _MATCH, ["objectId"], unique=False)
    if online.is_postgres():
        online.with_lock_timeout(
            lambda: op.execute(f'GRANT SELECT ON "{_MATCH}" TO apdb_reader'), "grant"
        )


def downgrade() -> None:
    online.with_lock_timeout(
        lambda: op.drop_index("IDX_DiaObjectToObjectMatch_objectId", table_name=_MATCH),
        "drop index",
    )
    online.with_lock_timeout(lambda: op.drop_table(_MATCH), f"drop {_MATCH}")
    # Last (it commits the steps above): a concurrent drop, repeatable.
    online.drop_index_online("IDX_DiaObject_last_validityStartMjdTai", "DiaObject")
