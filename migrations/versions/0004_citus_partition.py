"""partitionId: a coarse sky partition of each DiaObject, carried by its sources; Citus

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 18:00:00

- ``partitionId`` (INTEGER, NOT NULL) on ``DiaObject``, ``DiaSource``,
  ``DiaForcedSource`` and ``SSSource``: the HEALPix NESTED pixel at order
  ``config:sky.partition_order`` of the DiaObject's first version (its
  ``pixelId`` shifted right by ``2 * (index_order - partition_order)``);
  sources and forced sources carry their object's value, sources without an
  object their own ``pixelId``'s, SSSources their DiaSource's (or their own
  position, from ``galLon``/``galLat``, when the DiaSource is not stored).
- ``metadata`` gains ``config:sky.partition_order`` (6) and
  ``config:backend`` (``sql``) when they are missing (databases created
  before this revision); a database being created records its own first.
- PostgreSQL: while the column is backfilled, and until every writer runs
  code that sets it, a ``BEFORE INSERT`` trigger per table
  (`migrations.online.fill_on_insert`) computes it for rows inserted
  without it; NOT NULL is then set without a long exclusive lock
  (`migrations.online.set_not_null_online`).  On Citus the triggers are
  dropped before the tables are distributed.
- On a Citus APDB (``config:backend`` = ``citus``, the ``citus`` extension
  installed on every node): primary and unique keys of the four tables start
  with ``partitionId``; they become hash-distributed tables co-located with
  ``DiaObject`` (``config:citus.shard_count`` shards, 32 by default), and
  ``metadata``, ``ApdbVisitDetector``, ``SSObject`` and
  ``DiaObject_To_Object_Match`` become reference tables (a copy on every
  node).

SQLite cannot add a NOT NULL column without a default: there the column is
``NOT NULL DEFAULT 0`` (the store always writes it).  Offline (``--sql``)
the SSSource fallback position and the Citus step are not rendered.

Downgrade: on Citus the tables are undistributed first (rows move back to
the coordinator), then the keys are restored and the column dropped; the
metadata values are kept (so an upgrade again restores the same layout).
"""

from collections.abc import Callable, Sequence

import numpy as np
import sqlalchemy as sa
from alembic import context, op

from migrations import online

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTITIONED = ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource")
_REFERENCE = ("metadata", "ApdbVisitDetector", "SSObject", "DiaObject_To_Object_Match")
_DEFAULTS = {"config:sky.partition_order": "6", "config:backend": "sql"}
_LATEST = sa.text('"validityEndMjdTai" IS NULL')
_OBJ_COLS = ("diaObjectId", "validityStartMjdTai", "pixelId", "partitionId")

# (table, primary key columns, [(unique index or constraint, columns, kind, where)])
# before this revision; on Citus each key gets "partitionId" in front.
_KEYS = {
    "DiaObject": (
        ["diaObjectId", "validityStartMjdTai"],
        [("IDX_DiaObject_last_diaObjectId", ["diaObjectId"], "index", _LATEST)],
    ),
    "DiaSource": (["diaSourceId"], []),
    "DiaForcedSource": (
        ["diaObjectId", "visit", "detector"],
        [("UQ_DiaForcedSource_diaForcedSourceId", ["diaForcedSourceId"], "constraint", None)],
    ),
    "SSSource": (["diaSourceId"], []),
}


def _setting(name: str, default: str) -> str:
    """SQL of a metadata value read as an integer (``default`` when missing)."""
    return (
        f"COALESCE((SELECT CAST(value AS INTEGER) FROM metadata WHERE name = '{name}'), "
        f"{int(default)})"
    )


def upgrade() -> None:
    for name, value in _DEFAULTS.items():
        op.execute(
            f"INSERT INTO metadata (name, value) SELECT '{name}', '{value}' "
            f"WHERE NOT EXISTS (SELECT 1 FROM metadata WHERE name = '{name}')"
        )
    sqlite = not online.is_postgres()
    for table in _PARTITIONED:
        if sqlite:
            column = sa.Column("partitionId", sa.Integer(), nullable=False, server_default="0")
        else:
            column = sa.Column("partitionId", sa.Integer(), nullable=True)
        online.add_column_online(table, column)

    shift_sql = (
        f"(2 * ({_setting('config:sky.index_order', '29')} - "
        f"{_setting('config:sky.partition_order', _DEFAULTS['config:sky.partition_order'])}))"
    )
    shift = sa.literal_column(shift_sql)
    if not sqlite:
        # Rows the running (previous revision's) code inserts from now on,
        # without partitionId: computed on insert, so the backfill misses
        # none and NOT NULL holds under live writers.
        _fill_triggers(shift_sql)
    # Batched backfills (each batch its own transaction on a live PostgreSQL),
    # each batch set-based: one UPDATE ... FROM per rule, no subquery per row.
    only_null = not sqlite
    obj = sa.table("DiaObject", *map(sa.column, _OBJ_COLS))
    _backfill(obj, "diaObjectId", only_null, lambda r: [_object_update(obj, shift, r, only_null)])
    o = sa.table("DiaObject", *map(sa.column, _OBJ_COLS)).alias("o")
    for table, key in (("DiaSource", "diaSourceId"), ("DiaForcedSource", "diaForcedSourceId")):
        src = sa.table(table, *map(sa.column, (key, "diaObjectId", "pixelId", "partitionId")))
        own = src.c.pixelId.op(">>")(shift)
        _backfill(
            src,
            key,
            only_null,
            lambda r, src=src, key=key, own=own: _source_updates(
                src, src.c[key], (src.c.diaObjectId, o.c.diaObjectId), o, own, r, only_null
            ),
        )
    ss = sa.table("SSSource", *map(sa.column, ("diaSourceId", "partitionId")))
    s = sa.table("DiaSource", *map(sa.column, ("diaSourceId", "partitionId"))).alias("s")
    _backfill(
        ss,
        "diaSourceId",
        only_null,
        lambda r: _source_updates(
            ss,
            ss.c.diaSourceId,
            (ss.c.diaSourceId, s.c.diaSourceId),
            s,
            sa.literal(0),
            r,
            only_null,
        ),
    )
    if not context.is_offline_mode():
        _ssource_positions(op.get_bind())
    if not sqlite:
        for table in _PARTITIONED:
            # Validated check first (writers go on), then NOT NULL without a scan.
            online.set_not_null_online(table, "partitionId", sa.Integer())
        if not context.is_offline_mode() and _is_citus(op.get_bind()):
            for table in _PARTITIONED:
                online.drop_fill_on_insert(table, "partitionId")
            _distribute(op.get_bind())


# Rows per backfill batch (one transaction each on a live PostgreSQL).
_BATCH = 50_000
Range = tuple[int, int] | None


def _backfill(
    table: sa.TableClause,
    key: str,
    only_null: bool,
    updates: Callable[[Range], list[sa.Update]],
) -> None:
    """`online.backfill_by_key_ranges` over the rows still without partitionId."""
    where = table.c.partitionId.is_(None) if only_null else None
    online.backfill_by_key_ranges(table, key, updates, where, batch_size=_BATCH)


def _object_update(
    obj: sa.TableClause, shift: sa.ColumnElement, rng: Range, only_null: bool
) -> sa.Update:
    """DiaObject rows of ``rng``: the partition of the object's first version."""
    f = sa.table("DiaObject", *map(sa.column, _OBJ_COLS)).alias("f")
    g = sa.table("DiaObject", *map(sa.column, _OBJ_COLS)).alias("g")
    first = sa.select(f.c.diaObjectId, sa.func.min(f.c.validityStartMjdTai).label("v0")).group_by(
        f.c.diaObjectId
    )
    if rng is not None:
        first = first.where(f.c.diaObjectId.between(*rng))
    first = first.subquery("first")
    first_part = (
        sa.select(g.c.diaObjectId, g.c.pixelId.op(">>")(shift).label("p"))
        .join_from(
            g,
            first,
            sa.and_(
                g.c.diaObjectId == first.c.diaObjectId,
                g.c.validityStartMjdTai == first.c.v0,
            ),
        )
        .subquery("fp")
    )
    stmt = (
        sa.update(obj)
        .where(obj.c.diaObjectId == first_part.c.diaObjectId)
        .values(partitionId=first_part.c.p)
    )
    return _restrict(stmt, obj, obj.c.diaObjectId, rng, only_null)


def _source_updates(
    tgt: sa.TableClause,
    key: sa.ColumnElement,
    link: tuple[sa.ColumnElement, sa.ColumnElement],
    ref: sa.TableClause,
    own: sa.ColumnElement,
    rng: Range,
    only_null: bool,
) -> list[sa.Update]:
    """Rows of ``tgt`` in ``rng``: their ``ref`` row's partition, else ``own``.

    Two set-based statements per batch: a join with the referenced table
    (any of its rows with a partition: an object's versions share it), then
    ``own`` for the rows with no such row.
    """
    ours, theirs = link
    has_ref = sa.and_(theirs == ours, ref.c.partitionId.is_not(None))
    joined = sa.update(tgt).where(has_ref).values(partitionId=ref.c.partitionId)
    alone = sa.update(tgt).where(~sa.exists().where(has_ref)).values(partitionId=own)
    return [
        _restrict(joined, tgt, key, rng, only_null),
        _restrict(alone, tgt, key, rng, only_null),
    ]


def _restrict(
    stmt: sa.Update, tgt: sa.TableClause, key: sa.ColumnElement, rng: Range, only_null: bool
) -> sa.Update:
    if rng is not None:
        stmt = stmt.where(key.between(*rng))
    if only_null:
        stmt = stmt.where(tgt.c.partitionId.is_(None))
    return stmt


def _fill_triggers(shift_sql: str) -> None:
    """`online.fill_on_insert` on the four tables (see upgrade)."""
    own = f'CAST(NEW."pixelId" >> {shift_sql} AS INTEGER)'
    of_object = (
        'SELECT o."partitionId" FROM "DiaObject" o WHERE o."diaObjectId" = NEW."diaObjectId" '
        'AND o."partitionId" IS NOT NULL LIMIT 1'
    )
    for table in ("DiaObject", "DiaSource", "DiaForcedSource"):
        online.fill_on_insert(table, "partitionId", f"COALESCE(({of_object}), {own})")
    of_source = (
        'SELECT s."partitionId" FROM "DiaSource" s WHERE s."diaSourceId" = NEW."diaSourceId"'
    )
    online.fill_on_insert("SSSource", "partitionId", f"COALESCE(({of_source}), 0)")


def _ssource_positions(bind: sa.Connection) -> None:
    """SSSources without a stored DiaSource: the partition of their own position."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from apdb.sky import pixel_index

    rows = bind.execute(
        sa.text(
            'SELECT "diaSourceId", "galLon", "galLat" FROM "SSSource" '
            'WHERE "diaSourceId" NOT IN '
            '(SELECT "diaSourceId" FROM "DiaSource")'
        )
    ).fetchall()
    if not rows:
        return
    meta = dict(bind.execute(sa.text("SELECT name, value FROM metadata")).fetchall())
    order = int(meta.get("config:sky.partition_order", _DEFAULTS["config:sky.partition_order"]))
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    coords = SkyCoord(
        l=np.array([r[1] for r in rows]) * u.deg,
        b=np.array([r[2] for r in rows]) * u.deg,
        frame="galactic",
    ).icrs
    parts = pixel_index(coords.ra.deg, coords.dec.deg, order)
    bind.execute(
        sa.text('UPDATE "SSSource" SET "partitionId" = :p WHERE "diaSourceId" = :i'),
        [{"p": int(p), "i": int(i)} for p, i in zip(parts, ids, strict=True)],
    )


def _is_citus(bind: sa.Connection) -> bool:
    backend = bind.execute(
        sa.text("SELECT value FROM metadata WHERE name = 'config:backend'")
    ).scalar()
    if backend != "citus":
        return False
    has = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).scalar()
    if not has:
        raise RuntimeError(
            "this APDB is configured for Citus (config:backend) but the database has no "
            "citus extension: CREATE EXTENSION citus on every node first"
        )
    return True


def _set_keys(table: str, with_partition: bool) -> None:
    pk, uniques = _KEYS[table]
    lead = ["partitionId"] if with_partition else []
    op.drop_constraint(f"PK_{table}", table, type_="primary")
    op.create_primary_key(f"PK_{table}", table, lead + pk)
    for name, cols, kind, where in uniques:
        if kind == "index":
            op.drop_index(name, table_name=table)
            op.create_index(name, table, lead + cols, unique=True, postgresql_where=where)
        else:
            op.drop_constraint(name, table, type_="unique")
            op.create_unique_constraint(name, table, lead + cols)


def _existing(bind: sa.Connection, tables: Sequence[str]) -> list[str]:
    return [t for t in tables if sa.inspect(bind).has_table(t)]


def _distribute(bind: sa.Connection) -> None:
    shards = bind.execute(
        sa.text("SELECT value FROM metadata WHERE name = 'config:citus.shard_count'")
    ).scalar()
    for table in _PARTITIONED:
        _set_keys(table, with_partition=True)
    for table in _existing(bind, _REFERENCE):
        bind.execute(
            sa.text("SELECT create_reference_table(CAST(:t AS regclass))"), {"t": f'"{table}"'}
        )
    bind.execute(
        sa.text(
            "SELECT create_distributed_table(CAST(:t AS regclass), 'partitionId', "
            "shard_count => :n)"
        ),
        {"t": '"DiaObject"', "n": int(shards or 32)},
    )
    for table in _PARTITIONED[1:]:
        bind.execute(
            sa.text(
                "SELECT create_distributed_table(CAST(:t AS regclass), 'partitionId', "
                "colocate_with => '\"DiaObject\"')"
            ),
            {"t": f'"{table}"'},
        )


def _undistribute(bind: sa.Connection) -> None:
    citus_tables = {
        r[0]
        for r in bind.execute(
            sa.text("SELECT CAST(logicalrelid AS text) FROM pg_dist_partition")
        ).fetchall()
    }
    for table in (*_PARTITIONED[::-1], *_REFERENCE):
        if f'"{table}"' in citus_tables or table in citus_tables:
            bind.execute(
                sa.text("SELECT undistribute_table(CAST(:t AS regclass))"), {"t": f'"{table}"'}
            )
    for table in _PARTITIONED:
        _set_keys(table, with_partition=False)


def downgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    if not sqlite and not context.is_offline_mode():
        bind = op.get_bind()
        has = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).scalar()
        if has and bind.execute(sa.text("SELECT count(*) FROM pg_dist_partition")).scalar():
            _undistribute(bind)
    # Writers running the previous revision's code leave partitionId out:
    # nullable first, then no trigger reads it, then the columns go.
    if not sqlite:
        for table in _PARTITIONED:
            online.with_lock_timeout(
                lambda t=table: op.alter_column(
                    t, "partitionId", existing_type=sa.Integer(), nullable=True
                ),
                f"{table}.partitionId NULL",
            )
    for table in _PARTITIONED:
        online.drop_fill_on_insert(table, "partitionId")
    for table in _PARTITIONED:
        online.drop_column_online(table, "partitionId")
