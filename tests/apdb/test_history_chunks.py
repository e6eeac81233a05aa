"""History chunks (revision 0008): a history read from the chunks equals the row tables.

Run on every backend (``apdb`` fixture).  Each comparison reads the same
history twice, from the chunks (`ApdbSql.read_history_chunks`, the default
for reads with a region) and from the row tables, after stores and after
each update operation that changes source rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb
from apdb.history_chunks import MIN_ROWS_PER_CHUNK
from apdb.schema import CHUNK_TABLE
from apdb.sky import Cone, Polygon
from apdb.testing.catalogs import (
    fill_all_columns,
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

RA, DEC = 150.0, 2.2
N = 400
# A field of several order-8 cells (≈14′), two detectors per visit.
FIELD = 0.4
_KEYS = {"DiaSource": ["diaSourceId"], "DiaForcedSource": ["diaForcedSourceId"]}


def _t(mjd: float) -> Time:
    return Time(mjd, format="mjd", scale="tai")


def _store_visits(apdb: Apdb, n_visits: int = 4) -> dict[str, np.ndarray]:
    """Store ``n_visits`` visits of two detectors (each half of the objects)."""
    rng = np.random.default_rng(5)
    ids = np.arange(1, N + 1, dtype=np.int64)
    ra, dec = random_positions(N, RA, DEC, FIELD, rng)
    for v in range(1, n_visits + 1):
        mjd = 60000.0 + v
        for det, part in ((1, slice(0, N // 2)), (2, slice(N // 2, N))):
            o = ids[part]
            src_ids = (v * 10 + det) * 10_000 + np.arange(len(o))
            args = (o, ra[part], dec[part], v, det, mjd, rng)
            objects = fill_all_columns(
                "DiaObject", make_dia_objects(o, ra[part], dec[part], rng), rng
            )
            sources = fill_all_columns("DiaSource", make_dia_sources(src_ids, *args), rng)
            sources["reliabilityVersion"] = ["v1", None] * (len(o) // 2)
            forced = fill_all_columns(
                "DiaForcedSource", make_dia_forced_sources(src_ids, *args), rng
            )
            apdb.store(_t(mjd), objects, sources, forced)
    return {"ids": ids, "ra": ra, "dec": dec}


def _read(apdb: Apdb, table: str, chunks: bool, **kw) -> pd.DataFrame:
    # chunks: from the chunks whatever their size (these tests' chunks are small)
    apdb.read_history_chunks = chunks
    apdb.min_rows_per_chunk = 0
    try:
        get = apdb.get_dia_sources if table == "DiaSource" else apdb.get_dia_forced_sources
        return get(_t(60010.0), **kw)
    finally:
        apdb.read_history_chunks = True
        apdb.min_rows_per_chunk = MIN_ROWS_PER_CHUNK


def _same(apdb: Apdb, table: str, **kw) -> pd.DataFrame:
    """Read from chunks and from rows; assert equal (values, NULLs, dtypes); return it."""
    key = _KEYS[table]
    got = _read(apdb, table, True, **kw).sort_values(key).reset_index(drop=True)
    want = _read(apdb, table, False, **kw).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    return got


def _reads(apdb: Apdb, ids: np.ndarray) -> None:
    """Every kind of region read, on both tables."""
    cone = Cone(RA + 0.1, DEC - 0.05, 0.25)
    poly = Polygon(
        [RA - 0.2, RA + 0.3, RA + 0.3, RA - 0.2], [DEC - 0.2, DEC - 0.2, DEC + 0.25, DEC + 0.25]
    )
    for table in _KEYS:
        whole = _same(apdb, table, region=Cone(RA, DEC, FIELD + 0.01))
        assert len(whole) > 0
        _same(apdb, table, region=cone)
        _same(apdb, table, region=poly, object_ids=ids[::3])
        _same(apdb, table, region=cone, object_ids=ids[:0])
        _same(apdb, table, region=cone, start_time=_t(60002.5))
        _same(apdb, table, region=cone, months=0)
        _same(apdb, table, region=cone, include_withdrawn=True)


def test_chunks_cover_every_row_and_reads_equal_rows(apdb):
    truth = _store_visits(apdb)
    counts = apdb.row_counts()
    with apdb.engine.connect() as conn:
        t = apdb.schema_metadata.tables[CHUNK_TABLE]
        stmt = sa.select(t.c.tableName, sa.func.sum(t.c.nRows)).group_by(t.c.tableName)
        per_table = {name: int(n) for name, n in conn.execute(stmt)}
        n_chunks = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
    assert per_table == {
        "DiaSource": counts["DiaSource"],
        "DiaForcedSource": counts["DiaForcedSource"],
    }
    # several cells per visit-detector: 4 visits x 2 detectors x 2 tables and more
    assert n_chunks > 4 * 2 * 2
    _reads(apdb, truth["ids"])
    # the science: every source of the field's objects in the window, once
    got = _same(apdb, "DiaSource", region=Cone(RA, DEC, FIELD + 0.01), object_ids=truth["ids"])
    assert len(got) == 4 * N
    assert got["diaSourceId"].is_unique


def test_reads_equal_rows_after_each_update_operation(apdb):
    truth = _store_visits(apdb)
    ids = truth["ids"]
    region = Cone(RA, DEC, FIELD + 0.01)
    src = _same(apdb, "DiaSource", region=region)
    forced = _same(apdb, "DiaForcedSource", region=region)

    # reassign to another DiaObject: the chunk read follows the row
    moved = src["diaSourceId"].iloc[:5].to_numpy()
    apdb.reassign_dia_sources_to_dia_objects(dict.fromkeys(moved.tolist(), int(ids[-1])))
    _reads(apdb, ids)
    after = _same(apdb, "DiaSource", region=region).set_index("diaSourceId")
    assert (after.loc[moved, "diaObjectId"] == ids[-1]).all()
    of_last = _same(apdb, "DiaSource", region=region, object_ids=ids[-1:])
    assert set(moved.tolist()) <= set(of_last["diaSourceId"].tolist())

    # reassign to Solar System objects: diaObjectId becomes NULL
    ss = src["diaSourceId"].iloc[5:8].to_numpy()
    apdb.store_ss_objects(pd.DataFrame({"ssObjectId": [900], "designation": ["2024 AB1"]}))
    apdb.reassign_dia_sources(dict.fromkeys(ss.tolist(), 900))
    _reads(apdb, ids)
    after = _same(apdb, "DiaSource", region=region).set_index("diaSourceId")
    assert after.loc[ss, "diaObjectId"].isna().all()
    assert (after.loc[ss, "ssObjectId"] == 900).all()

    # withdraw: gone from the default read, there with include_withdrawn
    gone = src["diaSourceId"].iloc[10:20].to_numpy()
    assert apdb.withdraw_dia_sources(gone, time_withdrawn=_t(60011.0)) == 10
    gone_f = forced["diaForcedSourceId"].iloc[:7].to_numpy()
    assert apdb.withdraw_dia_forced_sources(gone_f, time_withdrawn=_t(60011.0)) == 7
    _reads(apdb, ids)
    now = _same(apdb, "DiaSource", region=region)
    assert not set(gone.tolist()) & set(now["diaSourceId"].tolist())
    assert len(now) == len(src) - 10
    incl = _same(apdb, "DiaSource", region=region, include_withdrawn=True)
    assert set(gone.tolist()) <= set(incl["diaSourceId"].tolist())
    assert len(_same(apdb, "DiaForcedSource", region=region)) == len(forced) - 7

    # validity end changes DiaObjects only: reads unchanged, still equal
    apdb.set_validity_end(ids[:10], _t(60009.5))
    _reads(apdb, ids)


@pytest.mark.parametrize("table", list(_KEYS))
def test_late_visit_and_empty_region(apdb, table):
    truth = _store_visits(apdb, n_visits=2)
    # a late visit (older than the stored ones) lands in its own chunks
    rng = np.random.default_rng(11)
    o = truth["ids"][:50]
    args = (o, truth["ra"][:50], truth["dec"][:50], 99, 3, 59999.5, rng)
    apdb.store(
        _t(59999.5),
        None,
        make_dia_sources(990_000 + np.arange(50), *args),
        make_dia_forced_sources(990_000 + np.arange(50), *args),
    )
    got = _same(apdb, table, region=Cone(RA, DEC, FIELD + 0.01), object_ids=o)
    assert (got["visit"] == 99).sum() == 50
    # a region with no stored rows
    assert len(_same(apdb, table, region=Cone(RA + 20, DEC, 0.1))) == 0


def test_revision_0008_backfills_the_chunks_of_stored_rows(apdb, apdb_url):
    from apdb import migrate

    truth = _store_visits(apdb, n_visits=3)
    region = Cone(RA, DEC, FIELD + 0.01)
    before = {t: _same(apdb, t, region=region, object_ids=truth["ids"]) for t in _KEYS}
    engine = sa.create_engine(apdb_url, poolclass=sa.pool.NullPool)
    try:
        migrate.downgrade(engine, "0007")
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table(CHUNK_TABLE)
        migrate.upgrade(engine, "head")
    finally:
        engine.dispose()
    # every visit-detector got its chunks from the rows: nothing left to fill
    assert apdb.fill_history_chunks() == 0
    for table, want in before.items():
        got = _same(apdb, table, region=region, object_ids=truth["ids"])
        pd.testing.assert_frame_equal(got, want)
        assert len(got) == 3 * N


def test_concurrent_update_operations_on_the_same_chunks(apdb):
    """Two threads withdraw different sources of the same chunks: no patch is lost."""
    import threading

    _store_visits(apdb, n_visits=2)
    region = Cone(RA, DEC, FIELD + 0.01)
    ids = np.sort(_same(apdb, "DiaSource", region=region)["diaSourceId"].to_numpy())
    # interleaved ids: both threads touch every chunk, ten times each
    parts = [ids[k::2][:200].reshape(10, 20) for k in (0, 1)]
    errors: list[BaseException] = []

    def work(batches: np.ndarray) -> None:
        try:
            for batch in batches:
                apdb.withdraw_dia_sources(batch, time_withdrawn=_t(60011.0))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    now = _same(apdb, "DiaSource", region=region)
    assert len(now) == len(ids) - 400
    withdrawn = _same(apdb, "DiaSource", region=region, include_withdrawn=True)
    assert withdrawn["timeWithdrawnMjdTai"].notna().sum() == 400


def test_chunk_format_patch_and_schema_evolution():
    """The chunk format alone: patch refuses unknown ids; old chunks decode by name."""
    import pyarrow as pa

    from apdb import history_chunks as hc

    rng = np.random.default_rng(3)
    ids = np.arange(1, 21, dtype=np.int64)
    ra, dec = random_positions(20, RA, DEC, 0.01, rng)
    frame = make_dia_forced_sources(ids + 100, ids, ra, dec, 7, 1, 60000.5, rng)
    columns = {
        c: (frame[c].to_numpy(), None)
        for c in frame.columns
        if c in hc.arrow_schema("DiaForcedSource").names
    }
    columns["pixelId"] = (np.arange(20, dtype=np.int64), None)
    columns["partitionId"] = (np.zeros(20, np.int64), None)
    blob = hc.encode("DiaForcedSource", columns)
    # an id that is not in the chunk: None (the caller rebuilds it from the rows)
    one = (np.array([1.0]), None)
    assert (
        hc.patch(
            "DiaForcedSource",
            blob,
            "diaForcedSourceId",
            np.array([999]),
            {"timeWithdrawnMjdTai": one},
        )
        is None
    )
    new = hc.patch(
        "DiaForcedSource", blob, "diaForcedSourceId", np.array([105]), {"timeWithdrawnMjdTai": one}
    )
    table = pa.ipc.open_stream(pa.py_buffer(new)).read_all()
    withdrawn = table.column("timeWithdrawnMjdTai").to_numpy()
    assert withdrawn[table.column("diaForcedSourceId").to_numpy() == 105].tolist() == [1.0]
    assert np.isnan(withdrawn).sum() == 19
    # a chunk written before a column existed: that column reads as NULL
    old = table.drop_columns(["scienceFluxErr"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, old.schema) as writer:
        writer.write(old)
    flt = hc.HistoryFilter(
        start=0.0,
        end=1e6,
        include_withdrawn=True,
        object_ids=None,
        ranges=np.array([[0, 100]]),
        region=Cone(RA, DEC, 1.0),
    )
    got = hc.decode("DiaForcedSource", [sink.getvalue().to_pybytes()], flt)
    assert len(got["diaForcedSourceId"][0]) == 20
    assert got["scienceFluxErr"][1].all()


def test_update_of_a_row_missing_from_its_chunk_rebuilds_the_chunk(apdb):
    """A chunk that lacks a row (not written by this code) is rebuilt from the rows."""
    import pyarrow as pa

    _store_visits(apdb, n_visits=1)
    region = Cone(RA, DEC, FIELD + 0.01)
    t = apdb.schema_metadata.tables[CHUNK_TABLE]
    with apdb.engine.begin() as conn:
        key = conn.execute(
            sa.select(t.c.partitionId, t.c.cellId, t.c.visit, t.c.detector, t.c.data)
            .where(t.c.tableName == "DiaSource")
            .limit(1)
        ).one()
        table = pa.ipc.open_stream(pa.py_buffer(bytes(key.data))).read_all()
        dropped = int(table.column("diaSourceId")[0].as_py())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write(table.slice(1))
        where = [
            t.c[c] == key[i] for i, c in enumerate(("partitionId", "cellId", "visit", "detector"))
        ]
        conn.execute(sa.update(t).where(*where).values(data=sink.getvalue().to_pybytes()))
    rows = _read(apdb, "DiaSource", False, region=region, include_withdrawn=True)
    assert (
        len(_read(apdb, "DiaSource", True, region=region, include_withdrawn=True)) == len(rows) - 1
    )
    assert apdb.withdraw_dia_sources([dropped], time_withdrawn=_t(60011.0)) == 1
    got = _same(apdb, "DiaSource", region=region, include_withdrawn=True).set_index("diaSourceId")
    assert len(got) == len(rows)
    assert got.loc[dropped, "timeWithdrawnMjdTai"] == 60011.0


def test_small_chunks_are_read_from_the_rows(apdb, monkeypatch):
    """Below `MIN_ROWS_PER_CHUNK` rows per chunk on average, the rows are read instead."""
    from apdb import history_chunks as hc

    _store_visits(apdb, n_visits=2)
    region = Cone(RA, DEC, FIELD + 0.01)
    want = _read(apdb, "DiaSource", False, region=region)
    decoded = []
    original = hc.decode
    monkeypatch.setattr(hc, "decode", lambda *a: decoded.append(1) or original(*a))
    apdb.min_rows_per_chunk = 10**9  # every chunk is "small"
    got = apdb.get_dia_sources(_t(60010.0), region=region)
    assert decoded == [] and len(got) == len(want) == 2 * N
    apdb.min_rows_per_chunk = 1
    got = apdb.get_dia_sources(_t(60010.0), region=region)
    assert decoded == [1] and len(got) == 2 * N
    # no chunk in the region at all: an empty frame, no chunk fetched
    assert len(apdb.get_dia_sources(_t(60010.0), region=Cone(RA + 20, DEC, 0.1))) == 0


@pytest.mark.parametrize(
    ("ids", "error"),
    [(["x"], "ColumnTypeError"), ([-1], "InvalidIdError"), ([1.5], "ColumnTypeError")],
)
def test_bad_object_ids_with_a_region_are_refused(apdb, ids, error):
    """The chunk path checks object ids as the row path does; nothing is changed."""
    from apdb import errors

    _store_visits(apdb, n_visits=1)
    before = apdb.row_counts()
    apdb.min_rows_per_chunk = 0  # the chunk path
    with pytest.raises(getattr(errors, error), match="object_ids"):
        apdb.get_dia_sources(_t(60010.0), region=Cone(RA, DEC, FIELD), object_ids=ids)
    assert apdb.row_counts() == before
