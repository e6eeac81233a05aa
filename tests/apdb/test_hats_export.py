"""HATS export (issue 13 §3): LSDB and DuckDB read the same rows as the APDB (both backends)."""

from __future__ import annotations

import numpy as np
import pytest

from apdb.hats_export import export_hats
from apdb.sky import Cone
from apdb.testing.survey import ID_STRIDE, SurveyPlan, store_survey

lsdb = pytest.importorskip("lsdb")  # the 'hats' extra
duckdb = pytest.importorskip("duckdb")


@pytest.fixture
def exported(apdb, tmp_path):
    plan = SurveyPlan(120, radius=2.0, seed=5)
    store_survey(apdb, plan, [1, 2, 3])
    apdb.withdraw_dia_sources([2 * ID_STRIDE + 7])
    out = tmp_path / "hats"
    stats = export_hats(apdb, out, order=5)
    assert stats.objects == 120 and stats.written == stats.partitions > 1
    return apdb, plan, out


def test_lsdb_cone_search_matches_region_read(exported):
    apdb, _, out = exported
    cat = lsdb.open_catalog(out)
    for ra, dec, radius in [(45.0, -30.0, 0.7), (46.0, -29.0, 1.2), (10.0, 10.0, 1.0)]:
        got = cat.cone_search(ra, dec, radius * 3600.0).compute()
        want = apdb.get_dia_objects(Cone(ra, dec, radius))
        assert sorted(got["diaObjectId"].tolist()) == sorted(want["diaObjectId"].tolist())


def test_lsdb_light_curve_equals_sql(exported):
    apdb, plan, out = exported
    cat = lsdb.open_catalog(out)
    oid = int(plan.object_ids[7])  # its visit-2 source is withdrawn
    row = cat.query(f"diaObjectId == {oid}").compute()
    assert len(row) == 1
    lc = apdb.get_light_curve(oid)
    det = row["diaSource"].nest.to_flat().sort_values("midpointMjdTai")
    frc = row["diaForcedSource"].nest.to_flat().sort_values("midpointMjdTai")
    sql_det = lc[lc["kind"] == "detection"].sort_values("midpointMjdTai")
    sql_frc = lc[lc["kind"] == "forced"].sort_values("midpointMjdTai")
    assert det["diaSourceId"].tolist() == sql_det["measurementId"].tolist()
    # 3 visits; the withdrawn one is there, marked, as in DiaLightCurve.
    assert det["timeWithdrawnMjdTai"].notna().tolist() == [False, True, False]
    np.testing.assert_array_equal(
        det["psfFlux"].to_numpy(float), sql_det["psfFlux"].to_numpy(float)
    )
    np.testing.assert_array_equal(det["band"].tolist(), sql_det["band"].tolist())
    assert frc["diaForcedSourceId"].tolist() == sql_frc["measurementId"].tolist()
    np.testing.assert_array_equal(
        frc["psfFlux"].to_numpy(float), sql_frc["psfFlux"].to_numpy(float)
    )


def test_duckdb_query_returns_the_same_rows(exported):
    apdb, plan, out = exported
    oid = int(plan.object_ids[3])
    query = f"""
        SELECT unnest(diaSource.diaSourceId) AS id, unnest(diaSource.psfFlux) AS flux
        FROM read_parquet('{out}/dataset/**/*.parquet') WHERE diaObjectId = {oid}
        ORDER BY id
    """
    rows = duckdb.sql(query).fetchall()
    t = plan.visit_time(4)
    want = apdb.get_dia_sources(t, object_ids=[oid], include_withdrawn=True)
    want = want.sort_values("diaSourceId")
    assert [r[0] for r in rows] == want["diaSourceId"].tolist()
    np.testing.assert_allclose([r[1] for r in rows], want["psfFlux"].to_numpy(float), rtol=0)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/dataset/**/*.parquet')").fetchall()
    assert n == [(120,)]


def test_reexport_rewrites_only_touched_partitions(exported):
    apdb, plan, out = exported
    files = {p: p.stat().st_mtime_ns for p in out.glob("dataset/Norder=*/Dir=*/*.parquet")}
    assert export_hats(apdb, out, order=5).written == 0
    apdb.withdraw_dia_sources([3 * ID_STRIDE + 11])  # one object, one partition
    stats = export_hats(apdb, out, order=5)
    assert stats.written == 1 and stats.partitions == len(files)
    changed = [p for p, t in files.items() if p.stat().st_mtime_ns != t]
    assert len(changed) == 1
    cat = lsdb.open_catalog(out)
    row = cat.query(f"diaObjectId == {int(plan.object_ids[11])}").compute()
    assert row["diaSource"].nest.to_flat()["timeWithdrawnMjdTai"].notna().sum() == 1
