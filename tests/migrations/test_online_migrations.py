"""Each revision's upgrade and downgrade on PostgreSQL and Citus while 4 processes store visits.

For revision R the database starts at R-1 and four worker processes
(``online_worker.py``, playing R-1's pipeline code, see there) store
overlapping visits through `Apdb.store` the whole time, while the test runs
the upgrade to R and the downgrade back to R-1 through `apdb.migrate` with
an engine, as ``apdb upgrade`` does: one transaction per revision, a
bounded ``lock_timeout`` on every step, concurrent index builds, batched
backfills.  Checked: no store fails, each step ends in bounded time, stores
keep completing during the migrations, and the tables hold exactly the rows
of the visits stored (none lost, none duplicated, one open version per
DiaObject).

Revision 0001 is not walked: its downgrade drops the tables (and the data).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb, migrate
from apdb.schema import ApdbTables, make_metadata
from apdb.sky import Cone

pytestmark = pytest.mark.postgres

WORKER = str(Path(__file__).with_name("online_worker.py"))
_spec = importlib.util.spec_from_file_location("online_worker", WORKER)
online_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(online_worker)

N_WORKERS = 4
N = 300  # rows per table per store
LOCK = {"lock_timeout_ms": 500, "retries": 20}
STEP_LIMIT_S = 30.0
_names = itertools.count()

# (revision, previous) of every revision after the first.
REVISIONS = [(rev, prev) for rev, prev, _ in reversed(migrate.history()) if prev is not None]


def _missing_columns(conn: sa.Connection) -> dict[str, list[str]]:
    """Columns this package writes that the database (at an older revision) lacks."""
    insp = sa.inspect(conn)
    out = {}
    for table in make_metadata().sorted_tables:
        if table.name not in {t.value for t in ApdbTables} or not insp.has_table(table.name):
            continue
        present = {c["name"] for c in insp.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in present]
        if missing:
            out[table.name] = missing
    return out


# On Citus, 0004 is the conversion to distributed tables: rows written by
# the previous revision's code (no partitionId, the distribution column) cannot
# be routed to a shard, so that revision needs the writers stopped (see
# docs/operations.md); its round trip with data on Citus is in
# test_migrations.py.  Every other revision is walked on Citus as well.
_CASES = [
    pytest.param(rev, prev, backend, id=f"{rev}-{backend}", marks=marks)
    for rev, prev in REVISIONS
    for backend, marks in (("postgres", []), ("citus", [pytest.mark.citus]))
    if not (backend == "citus" and rev == "0004")
]


@pytest.mark.parametrize(("revision", "previous", "backend"), _CASES)
def test_revision_runs_while_workers_store(request, tmp_path, backend, revision, previous):
    name = f"online_{next(_names)}"
    if backend == "citus":
        # A Citus APDB (coordinator + 2 workers, distributed tables at head).
        server = request.getfixturevalue("citus_cluster")
        url = server.create_database(name, template=request.getfixturevalue("citus_template"))
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(name)
    try:
        if backend != "citus":
            Apdb.create(url).close()
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        migrate.downgrade(engine, previous)
        with engine.connect() as conn:
            missing = _missing_columns(conn)
        steps, results, window = _run_under_load(url, engine, tmp_path, revision, previous, missing)
        migrate.upgrade(engine, "head")
        engine.dispose()

        failures = [f for r in results for f in r["failures"]]
        assert failures == [], failures
        for direction, elapsed in steps:
            assert elapsed < STEP_LIMIT_S, (revision, direction, elapsed)
        # Stores went on while the migrations ran (not only before and after).
        during = [e for r in results for _, e in r["timings"] if window[0] < e < window[1]]
        assert len(during) >= N_WORKERS, (steps, len(during))
        _check_rows(url, results)
    finally:
        server.drop_database(name)


def _worker(conn, *args) -> None:
    """Forked child: run the worker, send its lines through ``conn``."""
    try:
        online_worker.run(*args, conn.send)
    except BaseException as exc:  # reported to the parent, which fails the test
        conn.send(f"crashed: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _run_under_load(url, engine, tmp_path, revision, previous, missing):
    go, stop = tmp_path / "go", tmp_path / "stop"
    # Forked from this process (imports done): a cold interpreter per worker
    # would spend most of the test importing.
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for w in range(1, N_WORKERS + 1):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker, args=(child, url, w, N, str(go), str(stop), missing), daemon=True
        )
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    steps = []
    try:
        for pipe in pipes:
            assert pipe.poll(300), "worker never got ready"
            line = pipe.recv()
            assert line == "ready", line
        go.touch()
        time.sleep(1.0)  # stores under way before the first step
        window = [time.time(), 0.0]
        for direction, target in (("upgrade", revision), ("downgrade", previous)):
            start = time.time()
            getattr(migrate, direction)(engine, target, lock=LOCK)
            steps.append((direction, time.time() - start))
            with engine.connect() as conn:
                assert migrate.current_revision(conn) == target
            time.sleep(0.5)
        window[1] = time.time()
    finally:
        stop.touch()
    results = []
    for pipe, proc in zip(pipes, procs, strict=True):
        assert pipe.poll(300), "worker never finished"
        line = pipe.recv()
        proc.join(60)
        assert line.startswith("{"), line
        results.append(json.loads(line))
    return steps, results, window


def _check_rows(url: str, results: list[dict]) -> None:
    """The tables hold exactly the rows of the stored visits."""
    later = Time(60010.0, format="mjd", scale="tai")
    with Apdb.from_url(url) as db:
        # Visits the previous code stored get their history chunks now (revision 0008);
        # the history read of the whole patch from them equals the rows.
        db.fill_history_chunks()
        assert db.fill_history_chunks() == 0
        patch = Cone(30.0, -10.0, 0.25)
        from_chunks = db.get_dia_sources(later, region=patch, months=1)
        db.read_history_chunks = False
        from_rows = db.get_dia_sources(later, region=patch, months=1)
        db.read_history_chunks = True
        assert sorted(from_chunks["diaSourceId"]) == sorted(from_rows["diaSourceId"])
        counts = db.row_counts()
        expected_sources = []
        for worker, result in enumerate(results, start=1):
            visits = result["stored"]
            assert visits == list(range(1, len(visits) + 1))
            expected_sources += [online_worker.source_ids(v, worker, N) for v in visits]
            ids = online_worker.object_ids(worker, N)
            forced = db.get_dia_forced_sources(later, object_ids=ids, months=1)
            assert len(forced) == N * len(visits)
            assert forced["diaForcedSourceId"].is_unique
            assert all(db.contains_visit_detector(v, worker) for v in visits)
        sources = db.get_dia_sources(later, months=1)
    got = np.sort(sources["diaSourceId"].to_numpy())
    np.testing.assert_array_equal(got, np.sort(np.concatenate(expected_sources)))
    n_stores = sum(len(r["stored"]) for r in results)
    assert counts["DiaSource"] == counts["DiaForcedSource"] == n_stores * N
    assert counts["ApdbVisitDetector"] == n_stores
    assert counts["DiaObject"] == n_stores * N  # one version per object and visit
    assert counts["DiaObject(latest)"] == N * N_WORKERS
