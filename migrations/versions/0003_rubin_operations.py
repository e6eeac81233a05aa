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
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MATCH = "DiaObject_To_Object_Match"
_LATEST = sa.text('"validityEndMjdTai" IS NULL')


def upgrade() -> None:
    op.create_table(
        _MATCH,
        sa.Column("diaObjectId", sa.BigInteger(), nullable=False),
        sa.Column("objectId", sa.BigInteger(), nullable=False),
        sa.Column("dist", sa.REAL(), nullable=True),
        sa.Column("lnP", sa.REAL(), nullable=True),
        sa.PrimaryKeyConstraint("diaObjectId", "objectId", name=op.f(f"PK_{_MATCH}")),
    )
    op.create_index("IDX_DiaObjectToObjectMatch_objectId", _MATCH, ["objectId"], unique=False)
    op.create_index(
        "IDX_DiaObject_last_validityStartMjdTai",
        "DiaObject",
        ["validityStartMjdTai"],
        unique=False,
        postgresql_where=_LATEST,
        sqlite_where=_LATEST,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'GRANT SELECT ON "{_MATCH}" TO apdb_reader')


def downgrade() -> None:
    op.drop_index("IDX_DiaObject_last_validityStartMjdTai", table_name="DiaObject")
    op.drop_index("IDX_DiaObjectToObjectMatch_objectId", table_name=_MATCH)
    op.drop_table(_MATCH)
