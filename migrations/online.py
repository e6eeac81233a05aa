"""Online-safe building blocks for alembic revisions of a live APDB.

A revision of a database that 189 detector processes write to must never
make those writers wait for long, and never fail them.  On PostgreSQL:

- every lock a revision asks for is waited for at most ``lock_timeout``
  (`with_lock_timeout`); a step that times out is rolled back to a savepoint
  and retried a bounded number of times, after a short pause during which the
  writers queued behind it proceed;
- indexes are built ``CONCURRENTLY`` (`create_index_online`), outside a
  transaction (alembic's ``autocommit_block``), so writes go on while the
  index is built; an invalid index left by a failed build is dropped first;
- columns are added without a table rewrite (`add_column_online`): nullable,
  or NOT NULL with a constant server default (PostgreSQL >= 11 stores it in
  the catalogue, the table is not rewritten);
- backfills run in key-range batches of their own transactions
  (`backfill_in_batches`; `backfill_by_key_ranges` for set-based statements
  such as ``UPDATE ... FROM`` a join), so no row lock is held for the whole
  table.

On SQLite (one writer at a time, no concurrent builds) each helper is the
plain alembic operation; PostgreSQL-only features are no-ops.  In offline
mode (``apdb upgrade --sql``) the helpers emit the same SQL once, without
retries, so the printed script is what an online run executes.

The settings (lock timeout, retries) are set by ``migrations/env.py`` from
the caller's `apdb.migrate` options through `configure`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op

__all__ = [
    "LockSettings",
    "add_column_online",
    "backfill_by_key_ranges",
    "backfill_in_batches",
    "configure",
    "create_index_online",
    "drop_column_online",
    "drop_fill_on_insert",
    "drop_index_online",
    "fill_on_insert",
    "is_distributed",
    "is_postgres",
    "set_not_null_online",
    "settings",
    "views_dropped",
    "with_lock_timeout",
]

# SQLSTATE of "lock_timeout expired" (lock_not_available).
LOCK_NOT_AVAILABLE = "55P03"


@dataclass
class LockSettings:
    """How long a migration step may wait for a lock, and how often it retries.

    Attributes
    ----------
    lock_timeout_ms : `int`
        ``lock_timeout`` of each DDL step, in milliseconds.  Writers that
        arrive while a step waits queue behind it, so this is also the
        longest extra delay a store sees.
    retries : `int`
        Retries of a step after a lock timeout (then the error is raised and
        the revision's transaction rolled back).
    pause_s : `float`
        Mean pause between retries (jittered by +-50 %).
    online : `bool`
        Whether alembic owns the transactions (one per revision), so that
        ``autocommit_block`` and per-batch commits are possible.  False when
        the caller passed a connection inside its own transaction (e.g.
        ``Apdb.create`` on an empty database): then everything runs in it.
    """

    lock_timeout_ms: int = 1000
    retries: int = 10
    pause_s: float = 0.3
    online: bool = False


_settings = LockSettings()


def configure(**kwargs: object) -> LockSettings:
    """Set the `LockSettings` fields given as keywords; return the settings."""
    global _settings
    _settings = LockSettings(**{**_settings.__dict__, **kwargs})
    return _settings


def settings() -> LockSettings:
    """The current `LockSettings`."""
    return _settings


def is_postgres() -> bool:
    """Whether the revision runs against PostgreSQL (online or offline)."""
    return op.get_context().dialect.name == "postgresql"


def is_distributed(table: str) -> bool:
    """Whether ``table`` is a Citus distributed table (connected PostgreSQL only).

    Offline (``--sql``) and on SQLite: `False` (the backend is only known
    when connected).
    """
    if _offline() or not is_postgres():
        return False
    bind = op.get_bind()
    has = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).scalar()
    if not has:
        return False
    stmt = sa.text(
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = CAST(:t AS regclass)"
    )
    return bool(bind.execute(stmt, {"t": f'"{table}"'}).scalar())


def _offline() -> bool:
    return op.get_context().as_sql


def _is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def _pause() -> None:
    time.sleep(_settings.pause_s * random.uniform(0.5, 1.5))


def _timeout_literal() -> str:
    # An int rendered by us: SET cannot take bind parameters.
    return f"{int(_settings.lock_timeout_ms)}ms"


def with_lock_timeout(
    step: Callable[[], None], what: str = "migration step", own_transaction: bool = True
) -> None:
    """Run ``step`` (alembic operations) with a bounded lock wait, retrying on timeout.

    Parameters
    ----------
    step : callable
        Issues the DDL, e.g. ``lambda: op.add_column(...)``: one statement,
        safe to repeat (``IF NOT EXISTS``) when ``own_transaction``.
    what : `str`
        Description for the error raised when every retry timed out.
    own_transaction : `bool`
        On PostgreSQL with alembic owning the transactions, commit what the
        revision did so far and run the step in a transaction of its own
        (autocommit), so its lock is released as soon as it is done.  A
        revision that takes ACCESS EXCLUSIVE on two tables in one
        transaction can never get the second while writers hold it and wait
        for the first (a store writes DiaSource, then DiaObject).  Pass
        False for steps that must commit together with the next ones
        (`views_dropped`): then the step runs under a savepoint.

    Raises
    ------
    sqlalchemy.exc.OperationalError
        The lock was not obtained after ``retries`` retries.
    """
    if not is_postgres():
        step()
        return
    if _offline():
        # The script sets lock_timeout for its session once, at the top (env.py).
        if own_transaction and _autocommit() and not _in_autocommit:
            with _autocommit_block():
                step()
        else:
            step()
        return
    if own_transaction and _autocommit() and not _in_autocommit:
        with _autocommit_block(), _session_lock_timeout(op.get_bind()):
            _retry(op.get_bind(), step, what, savepoint=False)
        return
    conn = op.get_bind()
    if _in_autocommit:
        # Inside an autocommit block: a session setting, reset afterwards.
        with _session_lock_timeout(conn):
            _retry(conn, step, what, savepoint=False)
        return
    _retry(conn, step, what, savepoint=True)


def _retry(conn: sa.Connection, step: Callable[[], None], what: str, savepoint: bool) -> None:
    for attempt in range(_settings.retries + 1):
        sp = conn.begin_nested() if savepoint else None
        try:
            if sp is not None:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_timeout_literal()}'")
            step()
        except sa.exc.OperationalError as exc:
            if sp is not None:
                sp.rollback()
            if not _is_lock_timeout(exc) or attempt == _settings.retries:
                if _is_lock_timeout(exc):
                    exc.add_note(f"{what}: no lock after {attempt + 1} tries")
                raise
            _pause()
            continue
        if sp is not None:
            sp.commit()
        return


_in_autocommit = False


@contextmanager
def _autocommit_block() -> Iterator[None]:
    """alembic's ``autocommit_block``, remembered so that steps in it use no savepoint."""
    global _in_autocommit
    with op.get_context().autocommit_block():
        _in_autocommit = True
        try:
            yield
        finally:
            _in_autocommit = False


@contextmanager
def _session_lock_timeout(conn: sa.Connection) -> Iterator[None]:
    conn.exec_driver_sql(f"SET lock_timeout = '{_timeout_literal()}'")
    try:
        yield
    finally:
        conn.exec_driver_sql("RESET lock_timeout")


def add_column_online(table: str, column: sa.Column, schema: str | None = None) -> None:
    """Add a column without rewriting the table.

    Parameters
    ----------
    table : `str`
        Table name.
    column : `sqlalchemy.Column`
        Nullable, or NOT NULL with a constant ``server_default``.
    schema : `str`, optional
        Database schema of the table.

    Raises
    ------
    ValueError
        A NOT NULL column without a server default (it would fail on a table
        with rows, or need a rewrite): add it nullable, backfill, then set
        NOT NULL in a later step.
    """
    if not column.nullable and column.server_default is None:
        raise ValueError(
            f"{table}.{column.name}: a NOT NULL column needs a constant server_default to be "
            f"added online; add it nullable and backfill with backfill_in_batches"
        )
    # IF NOT EXISTS on PostgreSQL: a revision whose later autocommit steps
    # (backfills, concurrent builds) failed can be run again.
    kw = {"if_not_exists": True} if is_postgres() else {}
    with_lock_timeout(
        lambda: op.add_column(table, column, schema=schema, **kw),
        f"add column {table}.{column.name}",
    )


def drop_column_online(table: str, name: str, schema: str | None = None) -> None:
    """Drop a column (PostgreSQL only marks it dropped: no rewrite); repeatable there."""
    kw = {"if_exists": True} if is_postgres() else {}
    with_lock_timeout(
        lambda: op.drop_column(table, name, schema=schema, **kw), f"drop column {table}.{name}"
    )


def set_not_null_online(table: str, column: str, existing_type: sa.types.TypeEngine) -> None:
    """Make a column NOT NULL without scanning the table under an exclusive lock.

    ``ALTER COLUMN ... SET NOT NULL`` alone scans every row while holding
    ACCESS EXCLUSIVE (writers wait for the whole scan).  On PostgreSQL with
    alembic owning the transactions, this instead adds a ``CHECK (column IS
    NOT NULL) NOT VALID`` constraint (a brief lock), validates it in its own
    transaction (SHARE UPDATE EXCLUSIVE: writers go on during the scan), then
    sets NOT NULL, which PostgreSQL >= 12 proves from the valid constraint
    without a scan, and drops the constraint.  Each step waits at most
    ``lock_timeout``.  Elsewhere it is a plain ``alter_column``.

    Parameters
    ----------
    table, column : `str`
        The column.
    existing_type : `sqlalchemy.types.TypeEngine`
        Its type (alembic needs it on some backends).

    Raises
    ------
    sqlalchemy.exc.IntegrityError
        A row still has NULL (e.g. written by code that does not set the
        column): nothing is changed but a dropped, invalid constraint.
    """

    def plain() -> None:
        op.alter_column(table, column, existing_type=existing_type, nullable=False)

    if not _autocommit():
        if is_postgres():
            with_lock_timeout(plain, f"{table}.{column} NOT NULL")
        else:
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, existing_type=existing_type, nullable=False)
        return
    check = f"CK_{table}_{column}_not_null"
    quoted = f'"{table}"'
    with _autocommit_block():
        with_lock_timeout(
            lambda: op.execute(f'ALTER TABLE {quoted} DROP CONSTRAINT IF EXISTS "{check}"'),
            f"drop {check}",
        )
        with_lock_timeout(
            lambda: op.execute(
                f'ALTER TABLE {quoted} ADD CONSTRAINT "{check}" '
                f'CHECK ("{column}" IS NOT NULL) NOT VALID'
            ),
            f"add {check}",
        )
        with_lock_timeout(
            lambda: op.execute(f'ALTER TABLE {quoted} VALIDATE CONSTRAINT "{check}"'),
            f"validate {check}",
        )
        with_lock_timeout(plain, f"{table}.{column} NOT NULL")
        with_lock_timeout(
            lambda: op.execute(f'ALTER TABLE {quoted} DROP CONSTRAINT "{check}"'),
            f"drop {check}",
        )


def _autocommit() -> bool:
    """Whether concurrent (non-transactional) DDL is possible here."""
    return is_postgres() and (_offline() or _settings.online)


def create_index_online(
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    where: str | None = None,
    schema: str | None = None,
) -> None:
    """Create an index without blocking writes (``CONCURRENTLY`` on PostgreSQL).

    Parameters
    ----------
    name, table : `str`
        Index and table names.
    columns : sequence of `str`
        Indexed columns.
    unique : `bool`
        Unique index.
    where : `str`, optional
        Predicate of a partial index (SQL text, e.g. ``'"ssObjectId" IS NOT NULL'``),
        applied on both backends.
    schema : `str`, optional
        Database schema of the table.

    Notes
    -----
    On PostgreSQL with alembic owning the transactions, the index is built
    in an ``autocommit_block``: the revision's preceding work is committed
    first.  A build that failed earlier leaves an INVALID index behind; it is
    dropped (concurrently) before the next try, so the step can be repeated.
    In a caller's transaction (an empty database being created) the index is
    built normally, with a bounded lock wait.
    """
    kw: dict[str, object] = {"unique": unique, "schema": schema}
    if where is not None:
        kw["postgresql_where"] = sa.text(where)
        kw["sqlite_where"] = sa.text(where)
    if not _autocommit():
        with_lock_timeout(
            lambda: op.create_index(name, table, list(columns), **kw), f"create index {name}"
        )
        return
    kw["postgresql_concurrently"] = True
    with _autocommit_block():
        if _offline():
            op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
            op.create_index(name, table, list(columns), if_not_exists=True, **kw)
            return
        conn = op.get_bind()
        with _session_lock_timeout(conn):
            for attempt in range(_settings.retries + 1):
                _drop_invalid_index(conn, name, schema)
                try:
                    op.create_index(name, table, list(columns), if_not_exists=True, **kw)
                    return
                except sa.exc.OperationalError as exc:
                    if not _is_lock_timeout(exc) or attempt == _settings.retries:
                        raise
                    _pause()


def _drop_invalid_index(conn: sa.Connection, name: str, schema: str | None) -> None:
    stmt = sa.text(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = :name AND n.nspname = coalesce(:schema, current_schema())"
    )
    invalid = conn.execute(stmt, {"name": name, "schema": schema}).scalar()
    if invalid:
        op.drop_index(name, schema=schema, postgresql_concurrently=True, if_exists=True)


def drop_index_online(name: str, table: str, schema: str | None = None) -> None:
    """Drop an index without blocking writes (``CONCURRENTLY`` on PostgreSQL)."""
    if not _autocommit():
        with_lock_timeout(
            lambda: op.drop_index(name, table_name=table, schema=schema), f"drop index {name}"
        )
        return
    with _autocommit_block():
        with_lock_timeout(
            lambda: op.drop_index(
                name, table_name=table, schema=schema, postgresql_concurrently=True, if_exists=True
            ),
            f"drop index {name}",
        )


def backfill_in_batches(
    table: sa.Table,
    values: dict[str, sa.ColumnElement | object],
    key: str,
    where: sa.ColumnElement[bool] | None = None,
    batch_size: int = 20_000,
) -> int:
    """Set ``values`` on the rows of ``table`` in key-range batches.

    Parameters
    ----------
    table : `sqlalchemy.Table`
        Lightweight table (``sa.table(name, sa.column(...), ...)``) with at
        least ``key`` and the updated columns.
    values : `dict`
        Column name -> new value (constant or SQL expression of the row).
    key : `str`
        An indexed, unique column ordering the batches (e.g. the primary key).
    where : SQL expression, optional
        Only rows matching it (e.g. ``col IS NULL``: a re-run resumes).
    batch_size : `int`
        Rows per batch; each batch is its own transaction when alembic owns
        the transactions (PostgreSQL online), so row locks are short-lived.

    Returns
    -------
    n : `int`
        Rows updated (-1 in offline mode, where one UPDATE is emitted).
    """
    col = table.c[key]
    cond = [where] if where is not None else []
    if _offline():
        op.execute(sa.update(table).where(*cond).values(values))
        return -1
    if is_postgres() and _settings.online:
        # AUTOCOMMIT: each batch's UPDATE commits on its own.
        with _autocommit_block():
            return _backfill(op.get_bind(), table, values, col, cond, batch_size)
    return _backfill(op.get_bind(), table, values, col, cond, batch_size)


def _backfill(
    conn: sa.Connection,
    table: sa.Table,
    values: dict[str, object],
    col: sa.ColumnElement,
    cond: list,
    batch_size: int,
) -> int:
    total = 0
    for lo, hi in _key_ranges(conn, col, cond, batch_size):
        stmt = sa.update(table).where(col.between(lo, hi), *cond).values(values)
        total += conn.execute(stmt).rowcount
    return total


def _key_ranges(
    conn: sa.Connection, col: sa.ColumnElement, cond: list, batch_size: int
) -> Iterator[tuple[object, object]]:
    """Yield ``(lo, hi)`` of consecutive ranges of ``batch_size`` rows matching ``cond``.

    Each range is looked up after the caller has handled the previous one,
    so rows the caller updates out of ``cond`` are not counted twice.
    """
    last = None
    while True:
        bounds = sa.select(col.label("k")).where(*cond).order_by(col).limit(batch_size)
        if last is not None:
            bounds = bounds.where(col > last)
        sub = bounds.subquery()
        lo, hi = conn.execute(sa.select(sa.func.min(sub.c.k), sa.func.max(sub.c.k))).one()
        if lo is None:
            return
        yield lo, hi
        last = hi


def backfill_by_key_ranges(
    table: sa.TableClause,
    key: str,
    updates: Callable[[tuple[object, object] | None], Sequence[sa.Executable]],
    where: sa.ColumnElement[bool] | None = None,
    batch_size: int = 20_000,
) -> None:
    """Run set-based statements per key range of ``batch_size`` rows.

    `backfill_in_batches` sets values that are expressions of the row; when
    the value comes from other rows (a join), a correlated subquery per row
    is slow: ``updates`` instead builds, for a key range ``(lo, hi)``,
    statements such as ``UPDATE ... FROM`` a join restricted to that range.

    Parameters
    ----------
    table : `sqlalchemy.TableClause`
        Table whose ``key`` column orders the batches.
    key : `str`
        An indexed, unique column.
    updates : callable
        ``updates((lo, hi))`` returns the statements of one batch (keys in
        ``[lo, hi]``); ``updates(None)``, in offline mode, those of the whole
        table, printed once.
    where : SQL expression, optional
        Only ranges of rows matching it (e.g. ``col IS NULL``: a re-run
        resumes); the statements must restrict themselves likewise.
    batch_size : `int`
        Rows per range; on PostgreSQL online each statement commits on its
        own (autocommit), so row locks last one statement.
    """
    if _offline():
        for stmt in updates(None):
            op.execute(stmt)
        return
    if is_postgres() and _settings.online:
        with _autocommit_block():
            _run_ranges(op.get_bind(), table.c[key], updates, where, batch_size)
        return
    _run_ranges(op.get_bind(), table.c[key], updates, where, batch_size)


def _run_ranges(
    conn: sa.Connection,
    col: sa.ColumnElement,
    updates: Callable[[tuple[object, object] | None], Sequence[sa.Executable]],
    where: sa.ColumnElement[bool] | None,
    batch_size: int,
) -> None:
    cond = [where] if where is not None else []
    for key_range in _key_ranges(conn, col, cond, batch_size):
        for stmt in updates(key_range):
            conn.execute(stmt)


_PG_VIEWS = sa.text(
    "SELECT DISTINCT v.oid, v.relname, pg_get_viewdef(v.oid) "
    "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
    "JOIN pg_class v ON v.oid = r.ev_class JOIN pg_class t ON t.oid = d.refobjid "
    "WHERE t.relname = ANY(:tables) AND v.relkind = 'v' AND v.oid <> t.oid "
    "AND t.relnamespace = v.relnamespace ORDER BY v.oid"
)
_PG_GRANTS = sa.text(
    "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
    "WHERE table_name = :view AND grantee <> current_user"
)


@contextmanager
def views_dropped(tables: Sequence[str]) -> Iterator[None]:
    """Drop the views reading ``tables``, run the block, recreate them as they were.

    PostgreSQL refuses to change the type of a column a view uses, and
    SQLite's table rebuild (batch mode) breaks views on the table.  The
    definitions (and, on PostgreSQL, the SELECT grants) are read from the
    database, so this needs a live connection: offline mode raises.

    Parameters
    ----------
    tables : sequence of `str`
        Tables whose dependent views are dropped and recreated.

    Raises
    ------
    NotImplementedError
        In offline (``--sql``) mode.
    """
    if _offline():
        raise NotImplementedError(
            "views_dropped reads the view definitions from the database: run this revision "
            "online, or write the DROP/CREATE VIEW statements into it"
        )
    conn = op.get_bind()
    views: list[tuple[str, str, list[tuple[str, str]]]] = []
    if is_postgres():
        for _, name, body in conn.execute(_PG_VIEWS, {"tables": list(tables)}).all():
            grants = [tuple(r) for r in conn.execute(_PG_GRANTS, {"view": name}).all()]
            views.append((name, f'CREATE VIEW "{name}" AS {body}', grants))
    else:
        rows = conn.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid")
        ).all()
        for name, body in rows:
            if any(f'"{t}"' in body or f" {t} " in body for t in tables):
                views.append((name, body, []))
    for name, _, _ in reversed(views):
        with_lock_timeout(
            lambda n=name: op.execute(f'DROP VIEW "{n}"'),
            f"drop view {name}",
            own_transaction=False,
        )
    yield
    for name, body, grants in views:
        op.execute(body)
        for grantee, privilege in grants:
            op.execute(f'GRANT {privilege} ON "{name}" TO "{grantee}"')


def _trigger_names(table: str, column: str) -> tuple[str, str]:
    return f"apdb_fill_{table}_{column}", f"TR_{table}_{column}_fill"


def fill_on_insert(table: str, column: str, expression: str) -> None:
    """Fill ``column`` of rows inserted without it (PostgreSQL trigger).

    While a new column is backfilled, and until the code that writes it is
    rolled out, the running (older) code inserts rows without it; this
    ``BEFORE INSERT`` trigger computes it for them, so the backfill never
    misses a row and the column can become NOT NULL under live writers.
    Rows that carry a value keep it (the trigger only tests for NULL).
    A no-op on SQLite.

    Parameters
    ----------
    table, column : `str`
        The column to fill.
    expression : `str`
        SQL (PL/pgSQL) expression of the value, using ``NEW."col"`` for the
        inserted row's columns; written by the revision author, never from
        user input.
    """
    if not is_postgres():
        return
    function, trigger = _trigger_names(table, column)
    with_lock_timeout(
        lambda: op.execute(
            f'CREATE OR REPLACE FUNCTION "{function}"() RETURNS trigger LANGUAGE plpgsql AS $$\n'
            f'BEGIN\n  IF NEW."{column}" IS NULL THEN\n'
            f'    NEW."{column}" := {expression};\n  END IF;\n  RETURN NEW;\nEND $$'
        ),
        f"function {function}",
    )
    with_lock_timeout(
        lambda: op.execute(
            f'CREATE OR REPLACE TRIGGER "{trigger}" BEFORE INSERT ON "{table}" '
            f'FOR EACH ROW EXECUTE FUNCTION "{function}"()'
        ),
        f"trigger {trigger}",
    )


def drop_fill_on_insert(table: str, column: str) -> None:
    """Drop the trigger and function of `fill_on_insert` (if present)."""
    if not is_postgres():
        return
    function, trigger = _trigger_names(table, column)
    with_lock_timeout(
        lambda: op.execute(f'DROP TRIGGER IF EXISTS "{trigger}" ON "{table}"'),
        f"drop trigger {trigger}",
    )
    op.execute(f'DROP FUNCTION IF EXISTS "{function}"()')
