"""The PPDB and the replicator (issue 13 §2), from SQLite, PostgreSQL and Citus APDBs.

The APDB records 1 s chunks; each test waits for them to end and replicates
with no grace period.  Every check compares the PPDB's tables with the
APDB's, row for row and column for column.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.time import TimeDelta

from apdb import Apdb
from apdb.errors import ApdbNotFoundError
from apdb.sky import Cone
from apdb.sql.ppdb import CRASH_ENV, PPDB_CHUNK_TABLE, create_ppdb, open_ppdb, replicate
from apdb.sql.reads import read_frame
from apdb.testing.survey import ID_STRIDE, SurveyPlan, store_survey
from tests.apdb.replica_fixtures import backend_of, fresh_url

TABLES = {
    "DiaObject": ["diaObjectId", "validityStartMjdTai"],
    "DiaSource": ["diaSourceId"],
    "DiaForcedSource": ["diaForcedSourceId"],
}


@pytest.fixture
def pair(request, tmp_path, replica_apdb_url):
    """(APDB with replication, PPDB URL): a PPDB of the same kind (Citus: PostgreSQL)."""
    gen_p = fresh_url(request, tmp_path, backend_of(replica_apdb_url), "ppdb")
    ppdb_url = next(gen_p)
    db = Apdb.from_url(replica_apdb_url)
    create_ppdb(ppdb_url).close()
    yield db, ppdb_url
    db.close()
    next(gen_p, None)


def _frames(db) -> dict[str, pd.DataFrame]:
    out = {}
    with db.engine.connect() as conn:
        for name, keys in TABLES.items():
            frame = read_frame(conn, db.schema_metadata.tables[name], None)
            out[name] = frame.sort_values(keys).reset_index(drop=True)
    return out


def _assert_same(apdb, ppdb) -> None:
    a, p = _frames(apdb), _frames(ppdb)
    for name in TABLES:
        assert len(a[name]) > 0
        pd.testing.assert_frame_equal(a[name], p[name], check_dtype=True)


def _history(db) -> SurveyPlan:
    """Three visits of 12 objects, then every kind of update operation."""
    plan = SurveyPlan(12)
    store_survey(db, plan, [1, 2, 3])
    ids = plan.object_ids
    db.reassign_dia_sources_to_dia_objects({3 * ID_STRIDE + 0: int(ids[1])})
    db.set_validity_end([int(ids[2])], plan.visit_time(3) + TimeDelta(60.0, format="sec"))
    db.withdraw_dia_sources([2 * ID_STRIDE + 5])
    db.withdraw_dia_forced_sources([2 * ID_STRIDE + 6])
    time.sleep(1.2)  # let the 1 s chunks end
    return plan


def test_replicate_copies_rows_and_updates_then_deletes_chunks(pair):
    apdb, ppdb_url = pair
    plan = _history(apdb)
    n_chunks = len(apdb.get_replica_chunks())
    with open_ppdb(ppdb_url) as ppdb:
        stats = replicate(apdb, ppdb, grace=0)
        assert stats.chunks == n_chunks and stats.update_records == 5
        assert stats.rows >= 3 * 12 * 3
        _assert_same(apdb, ppdb)
        assert apdb.get_replica_chunks() == []
        # The analyst view gives the same light curve (the reassigned source moved).
        moved = int(plan.object_ids[1])
        lc_a = apdb.get_light_curve(moved)
        lc_p = ppdb.get_light_curve(moved)
        pd.testing.assert_frame_equal(lc_a, lc_p)
        # Its 3 own detections and the one moved to it, its 3 forced measurements.
        assert (lc_p["kind"] == "detection").sum() == 4 and (lc_p["kind"] == "forced").sum() == 3
        with ppdb.engine.connect() as conn:
            done = conn.execute(sa.text(f'SELECT count(*) FROM "{PPDB_CHUNK_TABLE}"')).scalar()
        assert done == n_chunks
        # History reads with a region: the PPDB has no history chunks, it reads
        # its rows (metadata history:chunks = false), and finds what the APDB finds.
        assert not ppdb.read_history_chunks and apdb.read_history_chunks
        later = plan.visit_time(3) + TimeDelta(3600.0, format="sec")
        cone = Cone(plan.ra.mean(), plan.dec.mean(), 1.0)
        apdb.min_rows_per_chunk = 0  # the APDB from its (small) chunks
        for get in ("get_dia_sources", "get_dia_forced_sources"):
            got = getattr(ppdb, get)(later, region=cone, include_withdrawn=True)
            want = getattr(apdb, get)(later, region=cone, include_withdrawn=True)
            assert len(got) == len(want) > 0
            key = got.columns[0]
            assert sorted(got[key]) == sorted(want[key])
        # Nothing left: a second run does nothing.
        again = replicate(apdb, ppdb, grace=0)
        assert (again.chunks, again.rows) == (0, 0)
        # Later stores go to new chunks and arrive too.
        store_survey(apdb, plan, [4])
        time.sleep(1.2)
        assert replicate(apdb, ppdb, grace=0).rows >= 3 * 12
        _assert_same(apdb, ppdb)


def test_unfinished_chunks_wait(pair):
    apdb, ppdb_url = pair
    store_survey(apdb, SurveyPlan(3), [1])
    with open_ppdb(ppdb_url) as ppdb:
        stats = replicate(apdb, ppdb, grace=3600)
        assert (stats.chunks, stats.rows) == (0, 0)
        assert ppdb.row_counts()["DiaSource"] == 0
    assert apdb.get_replica_chunks()


def test_a_chunk_replicated_twice_changes_nothing(pair, monkeypatch):
    apdb, ppdb_url = pair
    _history(apdb)
    with open_ppdb(ppdb_url) as ppdb:
        # First run: the APDB keeps its chunks (as after a kill before the delete).
        monkeypatch.setattr(apdb, "delete_replica_chunks", lambda ids: None)
        replicate(apdb, ppdb, grace=0)
        first = _frames(ppdb)
        with ppdb.engine.begin() as conn:  # forget that they were done
            conn.execute(sa.text(f'DELETE FROM "{PPDB_CHUNK_TABLE}"'))
        monkeypatch.undo()
        stats = replicate(apdb, ppdb, grace=0)
        assert stats.chunks > 0 and stats.rows > 0  # really copied again
        second = _frames(ppdb)
        for name in TABLES:
            pd.testing.assert_frame_equal(first[name], second[name])
        _assert_same(apdb, ppdb)


def _cli(*args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    code = "import sys; from apdb.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("crash", ["after_rows", "before_commit", "after_commit"])
def test_killed_replicator_leaves_ppdb_consistent_and_next_run_finishes(pair, crash):
    apdb, ppdb_url = pair
    _history(apdb)
    chunks_before = [c.id for c in apdb.get_replica_chunks()]
    url = apdb.config.db_url
    killed = _cli("ppdb", "replicate", url, ppdb_url, "--once", "--grace", "0", crash=crash)
    assert killed.returncode == -9, killed.stderr  # SIGKILL, mid-chunk
    with open_ppdb(ppdb_url) as ppdb:
        counts = ppdb.row_counts()
        with ppdb.engine.connect() as conn:
            done = [
                r[0] for r in conn.execute(sa.text(f'SELECT "chunkId" FROM "{PPDB_CHUNK_TABLE}"'))
            ]
    if crash == "after_commit":
        # The first transaction's chunks are complete in the PPDB and still in the APDB.
        assert done and sorted(done) == chunks_before[: len(done)] and counts["DiaSource"] > 0
        assert [c.id for c in apdb.get_replica_chunks()] == chunks_before
    else:
        # Rolled back: the PPDB is exactly as it was.
        assert done == [] and counts["DiaObject"] == counts["DiaSource"] == 0
    ok = _cli("ppdb", "replicate", url, ppdb_url, "--once", "--grace", "0")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("replicated ")
    with open_ppdb(ppdb_url) as ppdb:
        _assert_same(apdb, ppdb)
    assert apdb.get_replica_chunks() == []


def test_cli_errors_are_one_line(pair, tmp_path):
    apdb, ppdb_url = pair
    missing = _cli("ppdb", "replicate", apdb.config.db_url, f"sqlite:///{tmp_path}/none.sqlite3")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    # A PPDB URL that holds an APDB but no PPDB table is refused.
    with pytest.raises(ApdbNotFoundError, match="not a PPDB"):
        open_ppdb(apdb.config.db_url)
    made = _cli("ppdb", "create", f"sqlite:///{tmp_path}/new_ppdb.sqlite3")
    assert made.returncode == 0 and made.stdout.startswith("PPDB ready at")
    # A bad batch size is refused before anything moves: the chunks stay in the APDB.
    _history(apdb)
    chunks = apdb.get_replica_chunks()
    assert chunks
    for bad in ("0", "-3"):
        out = _cli(
            "ppdb",
            "replicate",
            apdb.config.db_url,
            made.stdout.split()[3],
            "--once",
            "--chunks-per-transaction",
            bad,
        )
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "chunks_per_transaction must be >= 1" in out.stderr
    assert apdb.get_replica_chunks() == chunks


def test_ss_objects_are_replicated_with_their_latest_values(pair):
    apdb, ppdb_url = pair
    ss = pd.DataFrame({"ssObjectId": [900, 901], "designation": ["2024 AB1", "2024 AB2"]})
    apdb.store_ss_objects(ss)
    time.sleep(1.2)
    with open_ppdb(ppdb_url) as ppdb:
        replicate(apdb, ppdb, grace=0)
        got = ppdb.get_ss_objects().sort_values("ssObjectId").reset_index(drop=True)
        assert got["designation"].tolist() == ["2024 AB1", "2024 AB2"]
        # A later replacement arrives as a replacement (the row is there: upserted).
        apdb.store_ss_objects(pd.DataFrame({"ssObjectId": [901], "designation": ["2024 ZZ9"]}))
        time.sleep(1.2)
        assert replicate(apdb, ppdb, grace=0).rows == 1
        want = apdb.get_ss_objects().sort_values("ssObjectId").reset_index(drop=True)
        got = ppdb.get_ss_objects().sort_values("ssObjectId").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
        assert got["designation"].tolist() == ["2024 AB1", "2024 ZZ9"]


def test_a_ppdb_upgraded_through_0008_reads_its_rows(pair):
    """Revision 0008 on an existing PPDB: no chunks written, history reads from the rows."""
    from apdb import migrate
    from apdb.schema import CHUNK_TABLE

    apdb, ppdb_url = pair
    plan = _history(apdb)
    with open_ppdb(ppdb_url) as ppdb:
        replicate(apdb, ppdb, grace=0)
    engine = sa.create_engine(ppdb_url, poolclass=sa.pool.NullPool)
    try:
        migrate.downgrade(engine, "0007")
        migrate.upgrade(engine, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.text(f'SELECT count(*) FROM "{CHUNK_TABLE}"')).scalar() == 0
    finally:
        engine.dispose()
    later = plan.visit_time(3) + TimeDelta(3600.0, format="sec")
    cone = Cone(plan.ra.mean(), plan.dec.mean(), 1.0)
    with open_ppdb(ppdb_url) as ppdb:
        assert not ppdb.read_history_chunks
        got = ppdb.get_dia_sources(later, region=cone, include_withdrawn=True)
    want = apdb.get_dia_sources(later, region=cone, include_withdrawn=True)
    assert sorted(got["diaSourceId"]) == sorted(want["diaSourceId"]) and len(got) == 3 * 12
