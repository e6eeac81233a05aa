"""`apdb.sql.transaction.write_transaction`: locks, retries, error translation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sqlalchemy as sa

from apdb import Apdb
from apdb.errors import ApdbConcurrencyError, ApdbDatabaseError, ApdbInputError
from apdb.sql import transaction
from apdb.sql.transaction import is_retryable, write_transaction
from tests.apdb.sql.visit_plans import (
    actual_chains,
    assert_chains_equal,
    expected_chains,
    visit_frames,
)


def _counter_table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    table = sa.Table("tx_counter", md, sa.Column("k", sa.Integer, primary_key=True))
    md.create_all(engine)
    return table


def test_work_result_is_returned_and_committed(apdb: Apdb):
    table = _counter_table(apdb.engine)

    def work(conn: sa.Connection) -> int:
        conn.execute(sa.insert(table).values(k=1))
        return 42

    assert write_transaction(apdb.engine, work, what="insert", object_ids=np.array([5, 3])) == 42
    with apdb.engine.connect() as conn:
        assert conn.execute(sa.select(table.c.k)).scalars().all() == [1]


def test_input_error_from_work_passes_through_and_rolls_back(apdb: Apdb):
    table = _counter_table(apdb.engine)
    calls = []

    def work(conn: sa.Connection) -> None:
        calls.append(1)
        conn.execute(sa.insert(table).values(k=1))
        raise ApdbInputError("tx_counter", "bad")

    with pytest.raises(ApdbInputError, match="tx_counter: bad"):
        write_transaction(apdb.engine, work, what="insert")
    assert calls == [1]  # not retried
    with apdb.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_unique_violation_is_retried_then_reported_with_the_objects(apdb: Apdb):
    table = _counter_table(apdb.engine)
    with apdb.engine.begin() as conn:
        conn.execute(sa.insert(table).values(k=1))
    calls = []

    def work(conn: sa.Connection) -> None:
        calls.append(1)
        conn.execute(sa.insert(table).values(k=2))
        conn.execute(sa.insert(table).values(k=1))  # always collides

    with pytest.raises(
        ApdbConcurrencyError, match=r"store of visit 7.*3 attempt.*ids 11, 12"
    ) as info:
        write_transaction(
            apdb.engine,
            work,
            what="store of visit 7",
            object_ids=np.array([12, 11]),
            max_attempts=3,
        )
    assert len(calls) == 3
    assert info.value.object_ids == [11, 12]
    assert isinstance(info.value, ApdbDatabaseError)
    with apdb.engine.connect() as conn:
        assert conn.execute(sa.select(table.c.k)).scalars().all() == [1]


def test_a_transient_collision_succeeds_on_retry(apdb: Apdb):
    table = _counter_table(apdb.engine)
    with apdb.engine.begin() as conn:
        conn.execute(sa.insert(table).values(k=1))
    calls = []

    def work(conn: sa.Connection) -> int:
        calls.append(1)
        if len(calls) == 1:
            conn.execute(sa.insert(table).values(k=1))  # collides once
        conn.execute(sa.insert(table).values(k=2))
        return len(calls)

    assert write_transaction(apdb.engine, work, what="insert") == 2
    with apdb.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(table.c.k)).scalars()) == [1, 2]


def test_other_database_errors_are_wrapped_not_retried(apdb: Apdb):
    calls = []

    def work(conn: sa.Connection) -> None:
        calls.append(1)
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(ApdbDatabaseError, match="broken write") as info:
        write_transaction(apdb.engine, work, what="broken write")
    assert not isinstance(info.value, ApdbConcurrencyError)
    assert calls == [1]
    assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    assert not is_retryable(info.value.__cause__)


@pytest.mark.postgres
def test_advisory_locks_serialize_writers_on_shared_objects(postgres_server, postgres_template):
    # PostgreSQL only: SQLite writers serialize on BEGIN IMMEDIATE instead.
    name = "tx_locks"
    db = Apdb.from_url(postgres_server.create_database(name, template=postgres_template))
    try:
        inside = threading.Event()
        release = threading.Event()
        order = []

        def first(conn: sa.Connection) -> None:
            order.append("first-in")
            inside.set()
            assert release.wait(30)
            order.append("first-out")

        def second(conn: sa.Connection) -> None:
            order.append("second-in")

        def other(conn: sa.Connection) -> None:
            order.append("other")

        t1 = threading.Thread(
            target=write_transaction,
            args=(db.engine, first),
            kwargs={"what": "a", "object_ids": np.array([3, 1, 2]), "partitions": np.array([7])},
        )
        t1.start()
        assert inside.wait(30)
        # Disjoint ids do not wait.
        write_transaction(
            db.engine, other, what="c", object_ids=np.array([4, 5]), partitions=np.array([7])
        )
        t2 = threading.Thread(
            target=write_transaction,
            args=(db.engine, second),
            kwargs={"what": "b", "object_ids": np.array([5, 2]), "partitions": np.array([7])},
        )
        t2.start()
        t2.join(0.5)
        assert t2.is_alive()  # waits for id 2
        release.set()
        t1.join(30)
        t2.join(30)
        assert order == ["first-in", "other", "first-out", "second-in"]
    finally:
        db.close()
        postgres_server.drop_database(name)


@pytest.mark.postgres
def test_a_writer_over_the_lock_budget_takes_the_gate_alone(postgres_server, postgres_template):
    # A writer of more objects than lock_budget takes only the exclusive gate:
    # it waits for the object writers that hold the gate in shared mode, and
    # object writers, even of disjoint objects, wait for it.
    name = "tx_gate"
    db = Apdb.from_url(postgres_server.create_database(name, template=postgres_template))
    try:
        with db.engine.connect() as conn:
            assert transaction.lock_budget(conn) == 64 - 16  # PostgreSQL's default 64
        transaction._budgets[db.engine] = 2
        order = []
        events = {k: threading.Event() for k in ("small-in", "small-go", "big-in", "big-go")}

        def small(conn: sa.Connection) -> None:
            order.append("small-in")
            events["small-in"].set()
            assert events["small-go"].wait(30)
            order.append("small-out")

        def big(conn: sa.Connection) -> None:
            order.append("big-in")
            events["big-in"].set()
            assert events["big-go"].wait(30)
            order.append("big-out")

        def disjoint(conn: sa.Connection) -> None:
            order.append("disjoint")

        def run(work, ids):
            return threading.Thread(
                target=write_transaction,
                args=(db.engine, work),
                kwargs={"what": work.__name__, "object_ids": np.array(ids)},
            )

        threads = [run(small, [1, 2])]
        threads[0].start()
        assert events["small-in"].wait(30)
        threads.append(run(big, [10, 11, 12]))
        threads[1].start()
        assert not events["big-in"].wait(0.5)  # waits for the shared gate holder
        events["small-go"].set()
        assert events["big-in"].wait(30)
        threads.append(run(disjoint, [20]))
        threads[2].start()
        threads[2].join(0.5)
        assert threads[2].is_alive()  # a disjoint object writer waits for the gate
        events["big-go"].set()
        for t in threads:
            t.join(30)
        assert order == ["small-in", "small-out", "big-in", "big-out", "disjoint"]

        # Stores through the gate keep the history exact (budget 0: every store).
        transaction._budgets[db.engine] = 0
        ids = np.arange(1, 31, dtype=np.int64)
        stores = [
            threading.Thread(target=db.store, args=visit_frames(v, 1, ids)) for v in (3, 1, 2)
        ]
        for t in stores:
            t.start()
        for t in stores:
            t.join(60)
        plan = [(v, 1, ids.tolist()) for v in (1, 2, 3)]
        assert_chains_equal(actual_chains(db), expected_chains(plan))
    finally:
        db.close()
        postgres_server.drop_database(name)


@pytest.mark.postgres
def test_a_big_writer_holds_off_only_its_partitions(
    postgres_server, postgres_template, monkeypatch
):
    """With `PARTITION_LOCKS`, over the budget: the partitions are locked exclusively.

    A big writer in partition 1 does not wait for (nor hold off) writers of
    partition 2, big or small; a small writer of partition 1 waits for it,
    even for other objects; a writer without partitions takes the gate
    exclusively and waits for everyone.
    """
    monkeypatch.setattr(transaction, "PARTITION_LOCKS", True)  # off by default
    name = "tx_partitions"
    db = Apdb.from_url(postgres_server.create_database(name, template=postgres_template))
    try:
        transaction._budgets[db.engine] = 3
        order = []
        go = threading.Event()
        inside = threading.Event()

        def big(conn: sa.Connection) -> None:
            order.append("big-in")
            inside.set()
            assert go.wait(30)
            order.append("big-out")

        def note(label):
            def work(conn: sa.Connection) -> None:
                order.append(label)

            return work

        def run(work, ids, parts, label):
            kwargs = {"what": label, "object_ids": np.array(ids)}
            if parts is not None:
                kwargs["partitions"] = np.array(parts)
            return threading.Thread(target=write_transaction, args=(db.engine, work), kwargs=kwargs)

        holder = run(big, [1, 2, 3, 4, 5], [1, 1, 1, 1, 1], "big")
        holder.start()
        assert inside.wait(30)
        # Partition 2, big and small: no wait.
        write_transaction(
            db.engine,
            note("other-big"),
            what="x",
            object_ids=np.arange(10, 20),
            partitions=np.full(10, 2),
        )
        write_transaction(
            db.engine,
            note("other-small"),
            what="y",
            object_ids=np.array([30]),
            partitions=np.array([2]),
        )
        # Partition 1 (other objects) and a writer without partitions: they wait.
        waiting = [
            run(note("same-partition"), [40], [1], "z"),
            run(note("no-partitions"), [50], None, "w"),
        ]
        for t in waiting:
            t.start()
        for t in waiting:
            t.join(0.5)
            assert t.is_alive()
        go.set()
        holder.join(30)
        for t in waiting:
            t.join(30)
        assert order[:4] == ["big-in", "other-big", "other-small", "big-out"]
        assert sorted(order[4:]) == ["no-partitions", "same-partition"]
    finally:
        db.close()
        postgres_server.drop_database(name)
