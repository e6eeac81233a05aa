"""The replicator's PostgreSQL pipe (`apdb.sql.ppdb_copy`), from PostgreSQL and Citus APDBs.

What these check beyond tests/apdb/test_ppdb.py (which compares the PPDB
with the APDB after every scenario, on every backend): the APDB's rows are
piped into the PPDB block by block; DiaObject versions that a later batch
closes are superseded (deleted, then copied again), never upserted; a
stream that breaks mid-table leaves the PPDB as it was; the PPDB has no
``partitionId`` fill triggers, and its ``partitionId`` values are the
APDB's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from apdb import Apdb
from apdb.errors import ApdbDatabaseError
from apdb.replica_schema import ReplicaTables
from apdb.sql import ppdb_copy
from apdb.sql.ppdb import PPDB_CHUNK_TABLE, create_ppdb, open_ppdb, replicate
from apdb.testing.survey import SurveyPlan, store_survey
from tests.apdb.replica_fixtures import fresh_url
from tests.apdb.test_ppdb import _assert_same, _frames, _history
from tests.conftest import _SERVER_BACKENDS, _fresh_apdb

_FILL_TRIGGERS = sa.text(
    "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "WHERE NOT t.tgisinternal AND t.tgname LIKE 'TR\\_%\\_partitionId\\_fill' ORDER BY 1"
)


@pytest.fixture(params=_SERVER_BACKENDS)
def server_pair(request, tmp_path) -> Iterator[tuple[Apdb, str]]:
    """(PostgreSQL or Citus APDB with replication, URL of a PostgreSQL PPDB)."""
    gen_a = _fresh_apdb(request, request.param, tmp_path, replica=True)
    gen_p = fresh_url(request, tmp_path, "postgres", "ppdb")
    db = Apdb.from_url(next(gen_a))
    ppdb_url = next(gen_p)
    create_ppdb(ppdb_url).close()
    yield db, ppdb_url
    db.close()
    next(gen_p, None)
    next(gen_a, None)


def _counts(url: str) -> dict[str, int]:
    with open_ppdb(url) as ppdb:
        counts = ppdb.row_counts()
        with ppdb.engine.connect() as conn:
            counts["chunks"] = conn.execute(
                sa.text(f'SELECT count(*) FROM "{PPDB_CHUNK_TABLE}"')
            ).scalar()
    return counts


def test_ppdb_has_no_fill_triggers_and_keeps_the_apdb_partitions(server_pair):
    apdb, ppdb_url = server_pair
    _history(apdb)
    with open_ppdb(ppdb_url) as ppdb:
        with ppdb.engine.connect() as conn:
            assert conn.execute(_FILL_TRIGGERS).all() == []
        replicate(apdb, ppdb, grace=0)
        _assert_same(apdb, ppdb)  # every column, partitionId included
        a, p = _frames(apdb), _frames(ppdb)
    for name in ("DiaObject", "DiaSource", "DiaForcedSource"):
        assert (p[name]["partitionId"] > 0).all()
        np.testing.assert_array_equal(p[name]["partitionId"], a[name]["partitionId"])


def test_versions_closed_by_a_later_batch_are_superseded_not_upserted(server_pair, monkeypatch):
    apdb, ppdb_url = server_pair
    plan = SurveyPlan(12)
    store_survey(apdb, plan, [1])
    time.sleep(1.2)
    deleted: list[int] = []
    real = ppdb_copy.supersede

    def spy(conn, table, keys):
        deleted.append(real(conn, table, keys))
        return deleted[-1]

    monkeypatch.setattr("apdb.sql.ppdb.supersede", spy)

    def no_merge(*args, **kwargs):
        raise AssertionError("new rows must not go through the upsert")

    monkeypatch.setattr(ppdb_copy, "merge", no_merge)
    with open_ppdb(ppdb_url) as ppdb:
        replicate(apdb, ppdb, grace=0)
        assert deleted == [0]  # a first batch: nothing there yet
        # Visits 2 and 3 close the 12 open versions of visit 1, then those of visit 2.
        store_survey(apdb, plan, [2, 3])
        time.sleep(1.2)
        replicate(apdb, ppdb, grace=0)
        assert deleted[1] == 12  # the visit-1 versions, copied open by the first batch
        _assert_same(apdb, ppdb)
        latest = _frames(ppdb)["DiaObject"]
        assert latest["validityEndMjdTai"].isna().sum() == 12  # one open version per object


def test_stream_in_small_blocks_and_a_batch_copied_again(server_pair, monkeypatch):
    """Many blocks per table; a batch copied again falls back to the upsert, same values."""
    apdb, ppdb_url = server_pair
    monkeypatch.setattr(ppdb_copy, "BLOCK_BYTES", 512)
    put = ppdb_copy.CopyStream.put
    blocks: list[int] = []

    def count(stream, block):
        blocks.append(len(block))
        put(stream, block)

    monkeypatch.setattr(ppdb_copy.CopyStream, "put", count)
    _history(apdb)
    chunks = [c.id for c in apdb.get_replica_chunks()]
    with open_ppdb(ppdb_url) as ppdb:
        with monkeypatch.context() as m:  # the APDB keeps its chunks, as after a kill
            m.setattr(apdb, "delete_replica_chunks", lambda ids: None)
            replicate(apdb, ppdb, grace=0)
        assert len(blocks) > 20
        first = _frames(ppdb)
        with ppdb.engine.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM "{PPDB_CHUNK_TABLE}"'))
        again = replicate(apdb, ppdb, grace=0)
        assert again.chunks == len(chunks) and again.rows > 0
        second = _frames(ppdb)
        for name, frame in first.items():
            assert frame.equals(second[name]), name
        _assert_same(apdb, ppdb)
    assert apdb.get_replica_chunks() == []


def test_a_stream_broken_mid_table_leaves_the_ppdb_as_it_was(server_pair, monkeypatch):
    apdb, ppdb_url = server_pair
    _history(apdb)
    chunks = apdb.get_replica_chunks()
    real = ppdb_copy.stream_copy_out

    def broken(raw, query, stream):
        if '"DiaSource"' not in query:
            return real(raw, query, stream)
        stream.put(ppdb_copy.copy_out(raw, query)[:100])  # a first block, then a failure
        raise ConnectionResetError("the APDB went away")

    monkeypatch.setattr("apdb.sql.ppdb.stream_copy_out", broken)
    with open_ppdb(ppdb_url) as ppdb, pytest.raises((ApdbDatabaseError, ConnectionResetError)):
        replicate(apdb, ppdb, grace=0)
    counts = _counts(ppdb_url)
    assert counts["chunks"] == counts["DiaObject"] == counts["DiaForcedSource"] == 0
    assert apdb.get_replica_chunks() == chunks
    monkeypatch.undo()
    with open_ppdb(ppdb_url) as ppdb:
        replicate(apdb, ppdb, grace=0)
        _assert_same(apdb, ppdb)


def test_read_keys_gives_each_recorded_version_once(server_pair):
    apdb, _ = server_pair
    plan = SurveyPlan(5)
    for visit in (1, 2, 3):  # one chunk each: a version is named where created and closed
        store_survey(apdb, plan, [visit])
        time.sleep(1.05)
    md = apdb.schema_metadata
    chunks = md.tables[ReplicaTables.DiaObjectChunks]
    keys = ["diaObjectId", "validityStartMjdTai"]
    with apdb.engine.connect() as conn:
        recorded = conn.execute(sa.select(*[chunks.c[k] for k in keys])).all()
        got = ppdb_copy.read_keys(conn, chunks, keys, sa.true())
    assert len(recorded) == 25  # the versions of visits 1 and 2 are named twice
    want = sorted({tuple(r) for r in recorded})
    assert len(want) == 15  # 5 objects x 3 visits
    pairs = zip(got["diaObjectId"].tolist(), got["validityStartMjdTai"].tolist(), strict=True)
    assert list(pairs) == want
