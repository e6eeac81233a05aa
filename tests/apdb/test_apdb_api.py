"""Behaviour of the `Apdb` interface, run on SQLite and PostgreSQL (``apdb`` fixture)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.errors import ApdbInputError
from apdb.schema import table_columns
from apdb.sky import Cone, Polygon
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


def _visit(apdb: Apdb, visit: int, mjd: float, ids, ra, dec, rng, detector=1, n_sources=1):
    n = len(ids)
    objects = make_dia_objects(ids, ra, dec, rng, n_sources=n_sources)
    sources = make_dia_sources(
        visit * 10_000 + np.arange(n), ids, ra, dec, visit, detector, mjd, rng
    )
    forced = make_dia_forced_sources(
        visit * 10_000 + np.arange(n), ids, ra, dec, visit, detector, mjd, rng
    )
    apdb.store(_mjd(mjd), objects, sources, forced)
    return objects, sources, forced


def test_round_trip_values_and_dtypes(apdb):
    rng = np.random.default_rng(1)
    ids = np.arange(1, 301, dtype=np.int64)
    ra, dec = random_positions(300, RA, DEC, 0.1, rng)
    objects, sources, forced = _visit(apdb, 7, 60000.0, ids, ra, dec, rng)

    got = apdb.get_dia_objects(Cone(RA, DEC, 0.2)).sort_values("diaObjectId")
    assert got["diaObjectId"].tolist() == ids.tolist()
    np.testing.assert_array_equal(got["ra"].to_numpy(), ra)
    np.testing.assert_array_equal(got["r_psfFluxMean"].to_numpy(), objects["r_psfFluxMean"])
    assert got["validityStartMjdTai"].eq(60000.0).all()
    assert got["validityEndMjdTai"].isna().all()
    # Every schema column, with the documented dtypes.
    for col in table_columns("DiaObject"):
        assert str(got[col.name].dtype) == col.pandas_dtype, col.name

    src = apdb.get_dia_sources(_mjd(60001.0), object_ids=ids).sort_values("diaSourceId")
    assert len(src) == 300
    np.testing.assert_array_equal(src["psfFlux"].to_numpy(), sources["psfFlux"])
    np.testing.assert_array_equal(src["isDipole"].to_numpy(bool), sources["isDipole"])
    assert (src["band"] == "r").all()
    assert str(src["diaObjectId"].dtype) == "Int64"
    assert src["ssObjectId"].isna().all()
    assert src["psfNdata"].eq(0).all()  # NOT NULL default filled by store
    assert (src["timeProcessedMjdTai"] > 60000).all()

    fs = apdb.get_dia_forced_sources(_mjd(60001.0), region=Cone(RA, DEC, 0.2))
    fs = fs.sort_values("diaForcedSourceId")
    np.testing.assert_array_equal(fs["scienceFlux"].to_numpy(), forced["scienceFlux"])


def test_nan_is_stored_as_null_and_read_as_nan(apdb):
    rng = np.random.default_rng(2)
    ids = np.arange(1, 11, dtype=np.int64)
    ra, dec = random_positions(10, RA, DEC, 0.05, rng)
    objects = make_dia_objects(ids, ra, dec, rng)
    objects.loc[[2, 5], "g_psfFluxMean"] = np.nan
    sources = make_dia_sources(ids + 100, ids, ra, dec, 1, 1, 60000.0, rng)
    sources.loc[3, "psfFlux"] = np.nan
    apdb.store(_mjd(60000.0), objects, sources)
    got = apdb.get_dia_objects(Cone(RA, DEC, 0.1)).set_index("diaObjectId").loc[ids]
    assert np.isnan(got["g_psfFluxMean"].to_numpy()).sum() == 2
    assert np.isnan(got.loc[[3, 6], "g_psfFluxMean"]).all()
    # Stored as NULL: SQL sees no value.
    import sqlalchemy as sa

    with apdb.engine.connect() as conn:
        n_null = conn.execute(
            sa.text('SELECT count(*) FROM "DiaObject" WHERE "g_psfFluxMean" IS NULL')
        ).scalar()
        n_null_src = conn.execute(
            sa.text('SELECT count(*) FROM "DiaSource" WHERE "psfFlux" IS NULL')
        ).scalar()
    assert n_null == 2
    assert n_null_src == 1
    src = apdb.get_dia_sources(_mjd(60000.5), object_ids=ids)
    assert src["psfFlux"].isna().sum() == 1


def test_versions_latest_only_and_history_kept(apdb):
    rng = np.random.default_rng(3)
    ids = np.arange(1, 51, dtype=np.int64)
    ra, dec = random_positions(50, RA, DEC, 0.05, rng)
    _visit(apdb, 1, 60000.0, ids, ra, dec, rng, n_sources=1)
    # Second visit: objects move slightly and gain a source.
    ra2 = ra + 1e-5
    _visit(apdb, 2, 60001.0, ids[:20], ra2[:20], dec[:20], rng, n_sources=2)
    got = apdb.get_dia_objects(Cone(RA, DEC, 0.1)).set_index("diaObjectId").sort_index()
    assert len(got) == 50
    assert got.loc[ids[:20], "nDiaSources"].eq(2).all()
    assert got.loc[ids[20:], "nDiaSources"].eq(1).all()
    np.testing.assert_array_equal(got.loc[ids[:20], "ra"], ra2[:20])
    assert got.loc[ids[:20], "validityStartMjdTai"].eq(60001.0).all()
    counts = apdb.row_counts()
    assert counts["DiaObject"] == 70
    assert counts["DiaObject(latest)"] == 50
    assert apdb.count_unassociated_objects() == 30


def test_history_window_and_selection(apdb):
    rng = np.random.default_rng(4)
    ids = np.arange(1, 21, dtype=np.int64)
    ra, dec = random_positions(20, RA, DEC, 0.05, rng)
    # Visits at day 0, 200 and 400; a 12-month (360 d) window from day 401
    # holds days 200 and 400 only.
    for k, day in enumerate([0.0, 200.0, 400.0]):
        _visit(apdb, k + 1, 60000.0 + day, ids, ra, dec, rng)
    t = _mjd(60401.0)
    src = apdb.get_dia_sources(t, object_ids=ids)
    assert sorted(set(src["visit"])) == [2, 3]
    assert len(apdb.get_dia_sources(t, object_ids=ids, months=24)) == 60
    # The window ends before the visit time: the current visit is not history.
    assert sorted(set(apdb.get_dia_sources(_mjd(60400.0), object_ids=ids)["visit"])) == [2]
    # Object ids select exactly those objects.
    some = apdb.get_dia_forced_sources(t, object_ids=ids[:5])
    assert set(some["diaObjectId"]) == set(ids[:5].tolist())
    assert len(apdb.get_dia_sources(t, object_ids=[])) == 0
    # Region and ids together: both must hold.
    near = Cone(float(ra[0]), float(dec[0]), 1e-4)
    both = apdb.get_dia_sources(t, region=near, object_ids=ids[:5])
    assert set(both["diaObjectId"]) == {1}


def test_region_exact_filter_matches_truth(apdb):
    rng = np.random.default_rng(5)
    n = 2000
    ids = np.arange(1, n + 1, dtype=np.int64)
    ra, dec = random_positions(n, RA, DEC, 0.5, rng)
    apdb.store(_mjd(60000.0), make_dia_objects(ids, ra, dec, rng))
    for region in [
        Cone(RA, DEC, 0.2),
        Cone(RA + 0.3, DEC - 0.1, 0.05),
        Polygon(
            [RA - 0.2, RA + 0.2, RA + 0.2, RA - 0.2], [DEC - 0.1, DEC - 0.1, DEC + 0.1, DEC + 0.1]
        ),
        Polygon([RA - 0.1, RA + 0.1, RA], [DEC - 0.1, DEC - 0.1, DEC + 0.1], margin=0.02),
    ]:
        truth = set(ids[region.contains(ra, dec)].tolist())
        assert truth, region
        got = set(apdb.get_dia_objects(region)["diaObjectId"].tolist())
        assert got == truth, region


def test_contains_visit_detector_and_restore_refused(apdb):
    rng = np.random.default_rng(6)
    ids = np.arange(1, 11, dtype=np.int64)
    ra, dec = random_positions(10, RA, DEC, 0.05, rng)
    objects, sources, forced = _visit(apdb, 3, 60000.0, ids, ra, dec, rng, detector=4)
    assert apdb.contains_visit_detector(3, 4)
    assert not apdb.contains_visit_detector(3, 5)
    before = apdb.row_counts()
    with pytest.raises(ApdbInputError, match=r"\(3, 4\)"):
        apdb.store(_mjd(60000.0), objects, sources, forced)
    assert apdb.row_counts() == before
    # Same ids under another visit number: refused, naming the ids.
    moved = sources.assign(visit=99)
    with pytest.raises(ApdbInputError, match="30000"):
        apdb.store(_mjd(60000.0), None, moved)
    assert apdb.row_counts() == before


def test_reassign_and_ss_objects(apdb):
    rng = np.random.default_rng(7)
    ids = np.arange(1, 11, dtype=np.int64)
    ra, dec = random_positions(10, RA, DEC, 0.05, rng)
    _, sources, _ = _visit(apdb, 1, 60000.0, ids, ra, dec, rng)
    ss = pd.DataFrame({"ssObjectId": [900, 901], "designation": ["2024 AB1", "2024 AB2"]})
    apdb.store_ss_objects(ss)
    got = apdb.get_ss_objects().sort_values("ssObjectId")
    assert got["designation"].tolist() == ["2024 AB1", "2024 AB2"]
    assert got["nObs"].eq(0).all()
    moved = sources["diaSourceId"].iloc[:2].tolist()
    apdb.reassign_dia_sources({moved[0]: 900, moved[1]: 901})
    # Moved sources no longer belong to their DiaObject.
    src = apdb.get_dia_sources(_mjd(60001.0), object_ids=ids)
    assert len(src) == 8
    everything = apdb.get_dia_sources(_mjd(60001.0)).set_index("diaSourceId")
    assert everything.loc[moved, "ssObjectId"].tolist() == [900, 901]
    assert everything.loc[moved, "diaObjectId"].isna().all()
    assert everything["ssObjectReassocTimeMjdTai"].notna().sum() == 2
    with pytest.raises(ApdbInputError, match="unknown diaSourceId"):
        apdb.reassign_dia_sources({123456789: 900})


def test_ss_sources_and_unassociated_dia_sources(apdb):
    rng = np.random.default_rng(8)
    ids = np.arange(1, 4, dtype=np.int64)
    ra, dec = random_positions(3, RA, DEC, 0.05, rng)
    sources = make_dia_sources(ids + 10, ids, ra, dec, 5, 2, 60000.0, rng)
    sources["diaObjectId"] = pd.array([1, 2, None], dtype="Int64")
    sources["ssObjectId"] = pd.array([None, None, 777], dtype="Int64")
    ss_sources = pd.DataFrame(
        {
            "diaSourceId": [13],
            "ssObjectId": [777],
            "eclLambda": [1.0],
            "eclBeta": [2.0],
            "galLon": [3.0],
            "galLat": [4.0],
            "designation": ["2024 XY9"],
        }
    )
    apdb.store(
        _mjd(60000.0), make_dia_objects(ids[:2], ra[:2], dec[:2], rng), sources, None, ss_sources
    )
    got = apdb.get_dia_sources(_mjd(60001.0), region=Cone(RA, DEC, 0.1)).set_index("diaSourceId")
    assert got.loc[13, "ssObjectId"] == 777
    assert pd.isna(got.loc[13, "diaObjectId"])
    assert apdb.row_counts()["SSSource"] == 1


def test_full_width_frames_round_trip(apdb):
    rng = np.random.default_rng(9)
    ids = np.arange(1, 101, dtype=np.int64)
    ra, dec = random_positions(100, RA, DEC, 0.05, rng)
    objects = fill_all_columns("DiaObject", make_dia_objects(ids, ra, dec, rng), rng)
    sources = fill_all_columns(
        "DiaSource", make_dia_sources(ids, ids, ra, dec, 1, 1, 60000.0, rng), rng
    )
    sources["reliabilityVersion"] = ["v1", "v10", "ünï"] * 33 + [None]
    apdb.store(_mjd(60000.0), objects, sources)
    got = apdb.get_dia_sources(_mjd(60001.0), object_ids=ids).sort_values("diaSourceId")
    for name in ["trailFlux", "ixxPSF", "reliability", "apFlux"]:
        np.testing.assert_array_equal(got[name].to_numpy(), sources[name].to_numpy())
    assert got["reliabilityVersion"].tolist()[:3] == ["v1", "v10", "ünï"]
    assert pd.isna(got["reliabilityVersion"].iloc[-1])
    obj = apdb.get_dia_objects(Cone(RA, DEC, 0.1)).sort_values("diaObjectId")
    np.testing.assert_array_equal(obj["y_psfFluxMaxSlope"], objects["y_psfFluxMaxSlope"])


def test_create_in_a_missing_directory_is_a_clear_error(tmp_path):
    from apdb.errors import ApdbDatabaseError

    target = tmp_path / "no" / "such" / "dir" / "apdb.sqlite3"
    with pytest.raises(ApdbDatabaseError, match="cannot create the APDB"):
        Apdb.create(f"sqlite:///{target}")
    assert not target.parent.exists()
