"""Write transactions that survive concurrent writers.

`write_transaction` is how every write method of `apdb.sql` runs its work:

- SQLite: the transaction starts with ``BEGIN IMMEDIATE`` (the `WRITE`
  execution option), so writers queue on the database lock instead of
  failing half-way; a writer that waited longer than the busy timeout is
  retried.
- PostgreSQL: ``READ COMMITTED``; before the work, the transaction takes a
  transaction-scoped advisory lock (``pg_advisory_xact_lock``) on each given
  DiaObject id, in ascending order, in one statement.  Two writers touching
  the same objects therefore queue on the first shared id instead of
  deadlocking, and the second one sees the first one's committed versions.
  Advisory locks live in the server's shared lock table
  (``max_locks_per_transaction * max_connections`` slots): a writer of more
  objects than its share (`lock_budget`) takes one exclusive gate lock
  instead and runs alone (see `lock_objects` and docs/engine.md).

Deadlocks, serialization failures, lock timeouts, SQLite "database is
locked" and unique violations that escape ``work`` roll the whole
transaction back and run it again, up to ``max_attempts`` times with a
jittered exponential backoff; then `ApdbConcurrencyError` is raised.  A unique
violation that means bad input (a re-stored visit) must be turned into an
`ApdbInputError` by ``work`` itself: `ApdbError` subclasses raised by ``work``
roll back and pass through unchanged.  Other database errors become
`ApdbDatabaseError`.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb.errors import ApdbConcurrencyError, ApdbDatabaseError, ApdbError
from apdb.sql.citus import effective_sqlstate
from apdb.sql.engine import WRITE

__all__ = [
    "GATE_KEY",
    "PARTITION_CLASS",
    "is_retryable",
    "lock_budget",
    "lock_objects",
    "write_transaction",
]

T = TypeVar("T")

# SQLSTATEs of PostgreSQL errors that a rerun of the transaction can clear:
# serialization_failure, deadlock_detected, lock_not_available (lock_timeout),
# unique_violation (a concurrent writer inserted the same key first).
_PG_RETRY = {"40001", "40P01", "55P03", "23505"}
# SQLite result codes of the same situations (busy/locked, unique keys).
_SQLITE_RETRY = {
    "SQLITE_BUSY",
    "SQLITE_BUSY_SNAPSHOT",
    "SQLITE_LOCKED",
    "SQLITE_CONSTRAINT_UNIQUE",
    "SQLITE_CONSTRAINT_PRIMARYKEY",
}
_SQLITE_RETRY_TEXT = ("database is locked", "database table is locked", "unique constraint failed")

_BACKOFF_BASE = 0.02  # seconds before the second attempt (doubled each time)
_BACKOFF_MAX = 1.0


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy/driver error) comes from a concurrent writer."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    state = effective_sqlstate(orig)  # Citus re-raises worker errors as XX000
    if state is not None:
        return state in _PG_RETRY
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None and name in _SQLITE_RETRY:
        return True
    text = str(orig).lower()
    return any(t in text for t in _SQLITE_RETRY_TEXT)


# Advisory-lock key of the gate every object lock passes (DiaObject ids are >= 0).
GATE_KEY = -1
# Partition locks for stores over the lock budget (see `lock_objects`).  Off:
# on the 2-core benchmark machine (bench.apdb_concurrency --max-locks 64,
# W = 16) they gave no throughput gain over the exclusive gate and 9-12 s
# tail latencies of history reads, cause not found (docs/benchmarks.md).
PARTITION_LOCKS = False
# Advisory-lock class (first key of the two-integer form) of the partition locks.
PARTITION_CLASS = 0x41504442  # "APDB"
_GATE_SHARED, _PART_SHARED, _PART_EXCLUSIVE, _OBJECT = 0, 1, 2, 3
# Lock-table slots per transaction kept free for other locks.
_LOCK_SLACK = 16
_budgets: weakref.WeakKeyDictionary[sa.Engine, int] = weakref.WeakKeyDictionary()


def lock_budget(conn: sa.Connection) -> int:
    """Most object locks one transaction takes: ``max_locks_per_transaction - 16``.

    PostgreSQL's shared lock table holds ``max_locks_per_transaction ×
    max_connections`` entries; when no transaction takes more than its share,
    concurrent stores can never run it out ("out of shared memory").  Read
    once per engine.
    """
    engine = conn.engine
    if engine not in _budgets:
        value = conn.execute(sa.text("SHOW max_locks_per_transaction")).scalar()
        _budgets[engine] = max(0, int(value) - _LOCK_SLACK)
    return _budgets[engine]


def lock_objects(
    conn: sa.Connection, object_ids: np.ndarray, partitions: np.ndarray | None = None
) -> None:
    """Take transaction-scoped locks on ``object_ids`` in a global order.

    PostgreSQL: one statement; keys are taken in the order gate
    (`GATE_KEY`), partitions (ascending), object ids (ascending), so no two
    writers can deadlock on them.

    - Up to `lock_budget` keys: the gate in shared mode, the objects'
      partitions (``partitionId``, when given) in shared mode, then
      ``pg_advisory_xact_lock`` on each sorted, de-duplicated id: writers of
      disjoint objects run in parallel, writers of shared objects queue on
      the first shared id.
    - More ids than that, with ``partitions`` given (a store: a DiaObject
      never changes partition): the gate shared and the partitions
      exclusively.  Such a writer waits for, and holds off, only the writers
      of objects in the same partitions (order-6 HEALPix pixels, ~0.9°);
      writers elsewhere on the sky run in parallel.  Partition keys live in
      the two-integer advisory key space (class `PARTITION_CLASS`), apart
      from the object ids.
    - Otherwise (more ids or partitions than the budget, or partitions
      unknown): the gate alone, exclusively; such a writer waits for every
      object writer to finish and runs alone, using one lock-table slot.

    The partition locks are used only when `PARTITION_LOCKS` is on (off by
    default: measured no better than the gate, see its comment); otherwise,
    and for writers that give no ``partitions``, the locks are the gate in
    shared mode plus the ids up to the budget, or the gate exclusively.
    With `PARTITION_LOCKS` on, a writer that gives no ``partitions`` (the
    daytime operations) cannot be excluded by a partition-exclusive writer,
    so it always takes the gate exclusively.

    SQLite: nothing (``BEGIN IMMEDIATE`` already serializes writers).
    """
    if conn.dialect.name != "postgresql" or object_ids.size == 0:
        return
    keys = np.unique(object_ids.astype(np.int64))  # sorted
    budget = lock_budget(conn)
    if not PARTITION_LOCKS:
        # Per-object locks under the shared gate, or the exclusive gate alone.
        if keys.size > budget:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(GATE_KEY).cast(sa.Text)))
            return
        kinds = [_GATE_SHARED] + [_OBJECT] * keys.size
        _take(conn, kinds, [GATE_KEY, *keys.tolist()])
        return
    if partitions is None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(GATE_KEY).cast(sa.Text)))
        return
    parts = np.unique(np.asarray(partitions, np.int64))
    n_parts = parts.size
    if keys.size + n_parts <= budget:
        kinds = [_GATE_SHARED] + [_PART_SHARED] * n_parts + [_OBJECT] * keys.size
        values = [GATE_KEY, *parts.tolist(), *keys.tolist()]
    elif n_parts <= budget:
        kinds = [_GATE_SHARED] + [_PART_EXCLUSIVE] * n_parts
        values = [GATE_KEY, *parts.tolist()]
    else:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(GATE_KEY).cast(sa.Text)))
        return
    _take(conn, kinds, values)


def _take(conn: sa.Connection, kinds: list[int], values: list[int]) -> None:
    """Take the advisory locks ``(kind, key)`` in list order, in one statement.

    The statement text is fixed (`_LOCK_QUERY`); the two arrays travel as
    array literals in text parameters, which the server parses (binding
    Python lists would cost the driver ~10 us per element).
    """
    params = {
        "kinds": "{" + ",".join(map(str, kinds)) + "}",
        "keys": "{" + ",".join(map(str, values)) + "}",
    }
    conn.exec_driver_sql(_LOCK_QUERY, params)


# unnest() yields the arrays in order, so the locks are taken in order.
_LOCK_QUERY = (
    pgsql.SQL(
        "SELECT count(CASE lock_keys.kind"
        " WHEN {gate} THEN pg_advisory_xact_lock_shared(lock_keys.k)"
        " WHEN {part_shared} THEN pg_advisory_xact_lock_shared({cls}, lock_keys.k::integer)"
        " WHEN {part_exclusive} THEN pg_advisory_xact_lock({cls}, lock_keys.k::integer)"
        " ELSE pg_advisory_xact_lock(lock_keys.k) END::text)"
        " FROM unnest(%(kinds)s::smallint[], %(keys)s::bigint[]) AS lock_keys(kind, k)"
    )
    .format(
        gate=pgsql.Literal(_GATE_SHARED),
        part_shared=pgsql.Literal(_PART_SHARED),
        part_exclusive=pgsql.Literal(_PART_EXCLUSIVE),
        cls=pgsql.Literal(PARTITION_CLASS),
    )
    .as_string(None)
)


def write_transaction(
    engine: sa.Engine,
    work: Callable[[sa.Connection], T],
    *,
    what: str,
    object_ids: np.ndarray | None = None,
    max_attempts: int = 5,
    lock_first: bool = True,
    partitions: np.ndarray | None = None,
) -> T:
    """Run ``work(conn)`` in a write transaction, retried on concurrency errors.

    Parameters
    ----------
    engine : `sqlalchemy.Engine`
        The APDB engine.
    work : callable
        Does the writes on the connection it is given; must not commit.  It
        may run several times (each attempt starts from a rolled-back state),
        so it must not have side effects outside the transaction.
    what : `str`
        The operation, for error messages (``"store of visit 7 detector 3"``).
    object_ids : `numpy.ndarray`, optional
        DiaObject ids the work reads-then-writes; locked first, in order
        (and named in `ApdbConcurrencyError`).
    max_attempts : `int`, optional
        Attempts before giving up.
    lock_first : `bool`, optional
        Lock ``object_ids`` before calling ``work``.  With `False`, ``work``
        calls `lock_objects` itself when it reaches the objects, so that the
        locks are held for less time (`ApdbSql.store` writes its sources
        first); the ids are then only named in errors.
    partitions : `numpy.ndarray`, optional
        ``partitionId`` of the objects, for `lock_objects` (without them a
        writer of objects runs alone, under the exclusive gate).

    Returns
    -------
    result
        What ``work`` returned.

    Raises
    ------
    ApdbConcurrencyError
        Still colliding with concurrent writers after ``max_attempts``.
    ApdbDatabaseError
        Any other database error.
    ApdbError
        Raised by ``work`` (bad input): passed through, nothing written.
    """
    ids = np.zeros(0, np.int64) if object_ids is None else np.asarray(object_ids, np.int64).ravel()
    options: dict[str, object] = {WRITE: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "READ COMMITTED"
    reason = ""
    attempts = max(1, int(max_attempts))
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(**options)
                with conn.begin():
                    if lock_first:
                        lock_objects(conn, ids, partitions)
                    return work(conn)
        except ApdbError:
            raise
        except sa.exc.DBAPIError as exc:
            if not is_retryable(exc):
                raise _database_error(what, exc) from exc
            reason = _one_line(exc)
            if attempt < attempts:
                delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.5))
                continue
            raise ApdbConcurrencyError(what, np.unique(ids).tolist(), attempts, reason) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise _database_error(what, exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _database_error(what: str, exc: BaseException) -> ApdbError:
    """Wrap a non-retryable database error (the shared translator when present)."""
    try:
        from apdb.sql.errors_map import database_error
    except ImportError:  # pragma: no cover - before the translator existed
        return ApdbDatabaseError(f"{what} failed: {_one_line(exc)}")
    return database_error(exc, what)
