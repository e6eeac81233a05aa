"""`migrations.online`: bounded lock waits with retries, concurrent indexes, batched backfills."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from migrations import online


@pytest.fixture
def settings():
    before = online.settings()
    yield online.configure(lock_timeout_ms=200, retries=20, pause_s=0.05, online=True)
    online.configure(**before.__dict__)


def _make_table(conn: sa.Connection, n: int) -> None:
    conn.execute(sa.text("CREATE TABLE t (id BIGINT PRIMARY KEY, v INTEGER, w INTEGER)"))
    if n == 0:
        return
    conn.execute(
        sa.text("INSERT INTO t (id, v) VALUES (:id, :v)"),
        [{"id": i, "v": i % 7} for i in range(1, n + 1)],
    )


def _hold_lock(url: str, table: str, seconds: float, ready: threading.Event) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn, conn.begin():
        # What a store holds on the tables it writes.
        conn.execute(sa.text(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE"))
        ready.set()
        time.sleep(seconds)
    engine.dispose()


@contextlib.contextmanager
def _writer_holding(url: str, table: str, seconds: float) -> Iterator[None]:
    """A writer holds ``table`` for ``seconds`` from the start of the block (joined at its end)."""
    ready = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(url, table, seconds, ready))
    holder.start()
    ready.wait(10)
    try:
        yield
    finally:
        holder.join()


def _column_names(conn: sa.Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns("t")}


@pytest.mark.postgres
def test_step_waits_in_short_slices_until_the_writer_commits(postgres_url, settings):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 10)
    with _writer_holding(postgres_url, "t", 1.0):
        start = time.time()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            conn.commit()  # as in env.py: alembic owns the transactions
            with Operations.context(ctx):
                online.add_column_online("t", sa.Column("x", sa.Integer(), nullable=True))
            elapsed = time.time() - start
            assert "x" in _column_names(conn)
    engine.dispose()
    # It could only succeed once the holder released its lock (after ~1 s),
    # through several 200 ms waits.
    assert elapsed >= 0.8


@pytest.mark.postgres
def test_step_gives_up_after_its_retries_and_changes_nothing(postgres_url, settings):
    online.configure(retries=2)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 10)
    with _writer_holding(postgres_url, "t", 3.0), engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        conn.commit()
        with pytest.raises(sa.exc.OperationalError) as info, Operations.context(ctx):
            online.add_column_online("t", sa.Column("x", sa.Integer()))
        assert "no lock after 3 tries" in "".join(getattr(info.value, "__notes__", []))
        assert "x" not in _column_names(conn)
    engine.dispose()


def test_not_null_column_without_default_is_refused(tmp_path, settings):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    with engine.begin() as conn:
        _make_table(conn, 3)
        with Operations.context(MigrationContext.configure(conn)):
            with pytest.raises(ValueError, match="server_default"):
                online.add_column_online("t", sa.Column("x", sa.Integer(), nullable=False))
            online.add_column_online(
                "t", sa.Column("y", sa.Integer(), nullable=False, server_default="0")
            )
        assert conn.execute(sa.text("SELECT sum(y), count(*) FROM t")).one() == (0, 3)


@pytest.mark.postgres
def test_concurrent_index_replaces_an_invalid_leftover(postgres_url, settings):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 100)
    # A failed concurrent build (duplicates) leaves an INVALID index behind.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("CREATE UNIQUE INDEX CONCURRENTLY ix_v ON t (v)"))
        conn.execute(sa.text("UPDATE t SET v = id"))
    valid = sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_v'::regclass")
    with engine.connect() as conn:
        assert conn.execute(valid).scalar() is False
        conn.commit()  # as in env.py: alembic owns the transactions
        with Operations.context(MigrationContext.configure(conn)):
            online.create_index_online("ix_v", "t", ["v"], unique=True, where="v > 0")
        assert conn.execute(valid).scalar() is True
        definition = conn.execute(sa.text("SELECT pg_get_indexdef('ix_v'::regclass)")).scalar()
    engine.dispose()
    assert "UNIQUE" in definition and "WHERE (v > 0)" in definition


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_backfill_in_batches_updates_each_matching_row_once(backend, request, tmp_path, settings):
    url = (
        f"sqlite:///{tmp_path}/t.sqlite3"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 1050)
        conn.execute(sa.text("UPDATE t SET w = -1 WHERE id <= 50"))  # already done
    t = sa.table("t", sa.column("id"), sa.column("v"), sa.column("w"))
    with engine.connect() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            n = online.backfill_in_batches(
                t, {"w": t.c.v * 10}, "id", t.c.w.is_(None), batch_size=100
            )
        conn.commit()
        rows = conn.execute(sa.text("SELECT id, v, w FROM t ORDER BY id")).all()
    engine.dispose()
    assert n == 1000
    assert all(w == -1 for i, v, w in rows if i <= 50)
    assert all(w == 10 * v for i, v, w in rows if i > 50)


@pytest.mark.postgres
def test_set_not_null_online_refuses_nulls_then_sets_it_and_drops_its_check(postgres_url, settings):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 2000)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        conn.commit()  # as in env.py: alembic owns the transactions
        with Operations.context(ctx):
            # NULLs left: refused, and the column stays nullable.
            with pytest.raises(sa.exc.IntegrityError, match="CK_t_w_not_null"):
                online.set_not_null_online("t", "w", sa.Integer())
            conn.execute(sa.text("UPDATE t SET w = 0"))
            conn.commit()
            online.set_not_null_online("t", "w", sa.Integer())
        nullable = {c["name"]: c["nullable"] for c in sa.inspect(conn).get_columns("t")}
        checks = sa.inspect(conn).get_check_constraints("t")
    engine.dispose()
    assert nullable["w"] is False and nullable["v"] is True
    assert checks == []


@pytest.mark.postgres
def test_fill_on_insert_fills_only_missing_values(postgres_url, settings):
    online.configure(online=False)  # inside this test's transaction
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 0)
        with Operations.context(MigrationContext.configure(conn)):
            online.fill_on_insert("t", "w", 'NEW."v" * 10')
        conn.execute(sa.text("INSERT INTO t (id, v) VALUES (1, 3), (2, 4)"))
        conn.execute(sa.text("INSERT INTO t (id, v, w) VALUES (3, 5, -1)"))
        rows = conn.execute(sa.text("SELECT id, w FROM t ORDER BY id")).all()
        with Operations.context(MigrationContext.configure(conn)):
            online.drop_fill_on_insert("t", "w")
        conn.execute(sa.text("INSERT INTO t (id, v) VALUES (4, 6)"))
        after = conn.execute(sa.text("SELECT w FROM t WHERE id = 4")).scalar()
    engine.dispose()
    assert rows == [(1, 30), (2, 40), (3, -1)]
    assert after is None


@pytest.mark.postgres
def test_in_a_callers_transaction_a_timed_out_step_rolls_back_to_its_savepoint(
    postgres_url, settings
):
    online.configure(retries=1, online=False)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _make_table(conn, 10)
    with _writer_holding(postgres_url, "t", 2.0), engine.connect() as conn:
        with conn.begin(), Operations.context(MigrationContext.configure(conn)):
            with pytest.raises(sa.exc.OperationalError):
                online.add_column_online("t", sa.Column("x", sa.Integer()))
            # The transaction is still usable after the rolled-back step.
            conn.execute(sa.text("CREATE TABLE u (id INTEGER)"))
        assert "x" not in _column_names(conn)
        assert sa.inspect(conn).has_table("u")
    engine.dispose()
