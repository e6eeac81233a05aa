"""`Apdb.get_light_curve` and `Apdb.get_busiest_dia_objects` on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.cli.lightcurve import format_light_curve
from apdb.schema import table_columns
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

# Object 11 is detected in visits 1-3 and forced in visits 2-3; object 12 is
# detected in visit 1 only and forced in visit 2; object 13 only in visit 3.
MJD = {1: 60000.25, 2: 60001.5, 3: 60003.125}
BAND = {1: "g", 2: "r", 3: "i"}


def _fill(apdb: Apdb) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(5)
    ra, dec = random_positions(3, 45.0, -30.0, 0.05, rng)
    pos = dict(zip([11, 12, 13], zip(ra, dec, strict=True), strict=True))
    detected = {1: [11, 12], 2: [11], 3: [11, 13]}
    forced = {1: [], 2: [11, 12], 3: [11]}
    stored_sources, stored_forced = [], []
    for visit in (1, 2, 3):
        ids = np.array(detected[visit], dtype=np.int64)
        f_ids = np.array(forced[visit], dtype=np.int64)
        r = np.array([pos[i][0] for i in ids])
        d = np.array([pos[i][1] for i in ids])
        objects = make_dia_objects(ids, r, d, rng, n_sources=visit)
        sources = make_dia_sources(
            100 * visit + ids, ids, r, d, visit, 7, MJD[visit], rng, band=BAND[visit]
        )
        if visit == 2:
            sources.loc[0, "scienceFlux"] = np.nan  # a NULL measurement
        fr = np.array([pos[i][0] for i in f_ids])
        fd = np.array([pos[i][1] for i in f_ids])
        forced_rows = make_dia_forced_sources(
            1000 * visit + f_ids, f_ids, fr, fd, visit, 7, MJD[visit], rng, band=BAND[visit]
        )
        apdb.store(Time(MJD[visit], format="mjd", scale="tai"), objects, sources, forced_rows)
        stored_sources.append(sources)
        stored_forced.append(forced_rows)
    return {
        "sources": pd.concat(stored_sources, ignore_index=True),
        "forced": pd.concat(stored_forced, ignore_index=True),
    }


def test_light_curve_rows_order_values_and_dtypes(apdb):
    stored = _fill(apdb)
    curve = apdb.get_light_curve(11)
    # 3 detections + 2 forced, by time then kind ('detection' < 'forced')
    assert list(zip(curve["visit"], curve["kind"], curve["measurementId"], strict=True)) == [
        (1, "detection", 111),
        (2, "detection", 211),
        (2, "forced", 2011),
        (3, "detection", 311),
        (3, "forced", 3011),
    ]
    assert curve["diaObjectId"].eq(11).all()
    assert curve["band"].tolist() == ["g", "r", "r", "i", "i"]
    np.testing.assert_array_equal(curve["midpointMjdTai"], [MJD[1], MJD[2], MJD[2], MJD[3], MJD[3]])
    src = stored["sources"].set_index("diaSourceId")
    forced = stored["forced"].set_index("diaForcedSourceId")
    expected_psf = [
        src.loc[111, "psfFlux"],
        src.loc[211, "psfFlux"],
        forced.loc[2011, "psfFlux"],
        src.loc[311, "psfFlux"],
        forced.loc[3011, "psfFlux"],
    ]
    np.testing.assert_array_equal(curve["psfFlux"].to_numpy(), np.array(expected_psf, np.float32))
    assert np.isnan(curve["scienceFlux"].iloc[1])  # the NULL stored for diaSourceId 211
    dtypes = {c.name: c.pandas_dtype for c in table_columns("DiaSource")}
    for column in ("visit", "detector", "midpointMjdTai", "ra", "psfFlux", "scienceFluxErr"):
        assert str(curve[column].dtype) == dtypes[column], column
    assert str(curve["measurementId"].dtype) == "int64"

    other = apdb.get_light_curve(12)
    assert other["kind"].tolist() == ["detection", "forced"]
    assert apdb.get_light_curve(999).empty
    assert list(apdb.get_light_curve(999).columns) == list(curve.columns)


def test_busiest_objects_counts_detections_and_forced(apdb):
    _fill(apdb)
    top = apdb.get_busiest_dia_objects(5)
    assert top["diaObjectId"].tolist() == [11, 12, 13]
    assert top["nMeasurements"].tolist() == [5, 2, 1]
    assert apdb.get_busiest_dia_objects(1)["diaObjectId"].tolist() == [11]
    assert apdb.get_busiest_dia_objects(0).empty


@pytest.mark.postgres
def test_light_curve_prints_the_same_on_both_backends(tmp_path, postgres_url):
    texts = []
    for url in (f"sqlite:///{tmp_path / 'lc.sqlite3'}", postgres_url):
        with Apdb.create(url) as apdb:
            _fill(apdb)
            texts.append(format_light_curve(apdb.get_light_curve(11)))
    assert texts[0] == texts[1]
    rows = texts[0].splitlines()
    assert len(rows) == 6
    # fixed decimals: MJD to 1e-6 day, fluxes to 0.1 nJy
    mjd, psf = rows[1].split()[5:7]
    assert mjd == f"{MJD[1]:.6f}" and len(psf.split(".")[1]) == 1
