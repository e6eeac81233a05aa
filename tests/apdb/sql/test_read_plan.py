"""Compiled reads (`apdb.sql.read_plan`): values, NULLs and plans on every backend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb.schema import table_columns
from apdb.sky import Cone
from apdb.sql.read_plan import read_plan
from apdb.sql.reads import copy_out, id_filter
from apdb.testing.catalogs import (
    fill_all_columns,
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

RA, DEC = 150.0, 2.2


def _mjd(mjd: float) -> Time:
    return Time(mjd, format="mjd", scale="tai")


def _three_state(n: int, rng: np.random.Generator) -> pd.arrays.BooleanArray:
    """Booleans with True, False and NULL all present."""
    state = rng.integers(0, 3, n)
    return pd.arrays.BooleanArray(state == 1, state == 2)


def test_packed_booleans_and_null_flags_round_trip(apdb):
    """Every DiaSource column reads back as stored, NULLs included (bit-packed on PostgreSQL)."""
    rng = np.random.default_rng(14)
    n = 200
    ids = np.arange(1, n + 1, dtype=np.int64)
    ra, dec = random_positions(n, RA, DEC, 0.05, rng)
    objects = make_dia_objects(ids, ra, dec, rng)
    sources = fill_all_columns(
        "DiaSource", make_dia_sources(ids + 1000, ids, ra, dec, 3, 4, 60000.0, rng), rng
    )
    booleans = [c.name for c in table_columns("DiaSource") if c.datatype == "boolean"]
    assert 2 * len(booleans) > 62  # value + NULL bits: more than one mask word holds
    for name in booleans:
        sources[name] = _three_state(n, rng)
    # Nullable integers: NULL in some rows, large values in others.
    parent = pd.array(rng.integers(1, 2**62, n), dtype="Int64")
    parent[rng.uniform(size=n) < 0.3] = pd.NA
    sources["parentDiaSourceId"] = parent
    apdb.store(_mjd(60000.0), objects, sources)

    got = apdb.get_dia_sources(_mjd(60001.0), object_ids=ids).sort_values("diaSourceId")
    got = got.reset_index(drop=True)
    assert len(got) == n
    for name in booleans:
        assert str(got[name].dtype) == "boolean", name
        exp = sources[name].reset_index(drop=True)
        np.testing.assert_array_equal(got[name].isna().to_numpy(), exp.isna().to_numpy(), name)
        known = ~exp.isna().to_numpy()
        np.testing.assert_array_equal(
            got[name].to_numpy(dtype=bool, na_value=False)[known],
            exp.to_numpy(dtype=bool, na_value=False)[known],
            name,
        )
    assert str(got["parentDiaSourceId"].dtype) == "Int64"
    np.testing.assert_array_equal(
        got["parentDiaSourceId"].isna().to_numpy(), np.asarray(parent.isna())
    )
    present = ~np.asarray(parent.isna())
    np.testing.assert_array_equal(
        got["parentDiaSourceId"].to_numpy(dtype=np.int64, na_value=0)[present],
        parent.to_numpy(dtype=np.int64, na_value=0)[present],
    )
    assert got["ssObjectId"].isna().all()  # nullable bigint, never given
    np.testing.assert_array_equal(got["psfFlux"].to_numpy(), sources["psfFlux"].to_numpy())


def test_empty_and_full_reads_have_the_same_dtypes(apdb):
    rng = np.random.default_rng(15)
    ids = np.arange(1, 21, dtype=np.int64)
    ra, dec = random_positions(20, RA, DEC, 0.05, rng)
    empty = apdb.get_dia_forced_sources(_mjd(60001.0), object_ids=ids)
    forced = make_dia_forced_sources(ids + 50, ids, ra, dec, 3, 4, 60000.0, rng)
    sources = make_dia_sources(ids + 50, ids, ra, dec, 3, 4, 60000.0, rng)
    apdb.store(_mjd(60000.0), make_dia_objects(ids, ra, dec, rng), sources, forced)
    full = apdb.get_dia_forced_sources(_mjd(60001.0), object_ids=ids)
    assert len(empty) == 0 and len(full) == 20
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    for name in ("DiaObject", "DiaSource"):
        cone = Cone(RA, DEC, 0.2)
        if name == "DiaObject":
            got = apdb.get_dia_objects(cone)
        else:
            got = apdb.get_dia_sources(_mjd(60001.0), region=cone)
        assert {c.name: c.pandas_dtype for c in table_columns(name)} == {
            k: str(v) for k, v in got.dtypes.items()
        }


def test_plan_is_compiled_once_per_table(apdb):
    table = apdb.schema_metadata.tables["DiaSource"]
    dialect = apdb.engine.dialect
    first = read_plan(table, dialect)
    assert read_plan(table, dialect) is first
    assert first.head.startswith("SELECT") and "WHERE" not in first.head
    # Another APDB (its own MetaData) has its own plans.
    other = type(apdb).from_url(apdb.engine.url.render_as_string(hide_password=False))
    try:
        assert read_plan(other.schema_metadata.tables["DiaSource"], dialect) is not first
    finally:
        other.close()


@pytest.mark.postgres
@pytest.mark.parametrize("table_name", ["DiaSource", "DiaForcedSource"])
def test_history_read_uses_a_bitmap_heap_scan(postgres_url, table_name):
    """The history read's plan, checked with EXPLAIN (nothing is timed).

    On a tiny table the planner would scan sequentially whatever we set, so
    the test also turns sequential scans off; the control shows that a plain
    index scan is a possible plan of the same statement.
    """
    from apdb import Apdb

    apdb = Apdb.create(postgres_url)
    try:
        rng = np.random.default_rng(16)
        ids = np.arange(1, 401, dtype=np.int64)
        ra, dec = random_positions(400, RA, DEC, 0.1, rng)
        objects = make_dia_objects(ids, ra, dec, rng)
        sources = make_dia_sources(ids, ids, ra, dec, 1, 1, 60000.0, rng)
        forced = make_dia_forced_sources(ids, ids, ra, dec, 1, 1, 60000.0, rng)
        apdb.store(_mjd(60000.0), objects, sources, forced)
        table = apdb.schema_metadata.tables[table_name]
        where = sa.and_(
            id_filter(table.c.diaObjectId, ids[:10], "postgresql"),
            table.c.midpointMjdTai >= 59900.0,
            table.c.midpointMjdTai < 60001.0,
            table.c.timeWithdrawnMjdTai.is_(None),
        )
        with apdb.engine.connect() as conn:
            conn.execute(sa.text(f'ANALYZE "{table_name}"'))
            plan = read_plan(table, conn.dialect)
            ours = plan.explain(conn, where, {"enable_seqscan": "off"})
            # Control: an index scan is a possible plan (bitmap scans off as well, since
            # on a tiny DiaForcedSource table the planner picks them by itself).
            control = plan.explain(
                conn,
                where,
                {"enable_seqscan": "off", "enable_indexscan": "on", "enable_bitmapscan": "off"},
            )
            # The settings are restored after the read.
            assert conn.execute(sa.text("SHOW enable_indexscan")).scalar() == "on"
        assert "Bitmap Heap Scan" in ours, ours
        assert "Index Scan" not in ours.replace("Bitmap Index Scan", ""), ours
        assert "Index Scan" in control.replace("Bitmap Index Scan", ""), control
        # And the read itself returns the rows.
        got = apdb.get_dia_sources(_mjd(60001.0), object_ids=ids[:10])
        assert sorted(got["diaSourceId"].tolist()) == ids[:10].tolist()
    finally:
        apdb.close()


@pytest.mark.postgres
def test_history_read_settings_are_local_to_the_read(postgres_url):
    """The planner settings travel with the COPY and are restored after it.

    Inside a caller's transaction that set ``enable_indexscan`` itself, a
    history read returns its rows and leaves the caller's value in place;
    outside the read the server's default is untouched.
    """
    from apdb import Apdb

    apdb = Apdb.create(postgres_url)
    try:
        rng = np.random.default_rng(7)
        ids = np.arange(1, 51, dtype=np.int64)
        ra, dec = random_positions(50, RA, DEC, 0.1, rng)
        apdb.store(
            _mjd(60000.0),
            make_dia_objects(ids, ra, dec, rng),
            make_dia_sources(ids, ids, ra, dec, 1, 1, 60000.0, rng),
        )
        table = apdb.schema_metadata.tables["DiaSource"]
        where = id_filter(table.c.diaObjectId, ids[:5], "postgresql")
        with apdb.engine.connect() as conn:
            plan = read_plan(table, conn.dialect)
            # During the COPY the read's setting holds.
            probe = "COPY (SELECT current_setting('enable_indexscan')) TO STDOUT"
            raw = conn.connection.driver_connection
            assert copy_out(raw, plan.settings_query(probe)) == b"off\n"
            assert conn.execute(sa.text("SHOW enable_indexscan")).scalar() == "on"
            conn.rollback()
            for caller in ("on", "off"):
                with conn.begin():
                    conn.execute(sa.select(sa.func.set_config("enable_indexscan", caller, True)))
                    got = plan.read(conn, where)
                    assert sorted(got["diaSourceId"][0].tolist()) == ids[:5].tolist()
                    assert conn.execute(sa.text("SHOW enable_indexscan")).scalar() == caller
            assert conn.execute(sa.text("SHOW enable_indexscan")).scalar() == "on"
    finally:
        apdb.close()
