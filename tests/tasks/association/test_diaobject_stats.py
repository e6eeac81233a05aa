"""DiaObject statistics against a direct, object-by-object pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.association.diaobject_stats import (
    BANDS,
    assign_new_dia_objects,
    compute_dia_object_stats,
    compute_forced_flux_stats,
)
from tasks.core.base import TaskError


def make_history(n_objects=40, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    sid = 1
    for obj in range(n_objects):
        ra0, dec0 = rng.uniform(0, 360), rng.uniform(-80, 80)
        n = rng.integers(1, 15)
        for _ in range(n):
            err = rng.uniform(50, 200)
            rows.append(
                {
                    "diaSourceId": sid,
                    "diaObjectId": 1000 + obj,
                    "band": rng.choice(["g", "r", "i"]),
                    "ra": ra0 + rng.normal(0, 0.1 / 3600),
                    "dec": dec0 + rng.normal(0, 0.1 / 3600),
                    "raErr": 0.1 / 3600,
                    "decErr": rng.uniform(0.05, 0.2) / 3600,
                    "midpointMjdTai": 60000 + rng.uniform(0, 300),
                    "psfFlux": rng.normal(1000, 300),
                    "psfFluxErr": err,
                    "scienceFlux": rng.normal(5000, 100),
                    "scienceFluxErr": rng.uniform(20, 60),
                }
            )
            sid += 1
    table = pd.DataFrame(rows)
    # a few awkward rows: NaN flux, NaN error, a Solar System source
    table.loc[3, "psfFlux"] = np.nan
    table.loc[5, "psfFluxErr"] = np.nan
    sso = table.iloc[[0]].assign(diaObjectId=pd.NA, diaSourceId=99999)
    table["diaObjectId"] = table["diaObjectId"].astype("Int64")
    return pd.concat([table, sso], ignore_index=True)


def direct(history: pd.DataFrame) -> pd.DataFrame:
    """Reference: loop over objects and bands with plain pandas/numpy."""
    out = []
    for obj_id, grp in history.dropna(subset=["diaObjectId"]).groupby("diaObjectId"):
        row = {"diaObjectId": int(obj_id), "nDiaSources": len(grp)}
        # no ra/dec covariance: the inverse-variance weighted mean of each
        # coordinate (ra unwrapped about the first source), errors combined likewise
        w_ra = (grp.raErr * np.cos(np.radians(grp.dec))) ** -2
        d_ra = (grp.ra - grp.ra.iloc[0] + 180.0) % 360.0 - 180.0
        row["ra"] = (grp.ra.iloc[0] + np.sum(w_ra * d_ra) / np.sum(w_ra)) % 360
        row["dec"] = np.sum(grp.dec / grp.decErr**2) / np.sum(grp.decErr**-2)
        row["decErr"] = 1 / np.sqrt(np.sum(grp.decErr**-2))
        row["ra_dec_Cov"] = 0.0
        row["firstDiaSourceMjdTai"] = grp.midpointMjdTai.min()
        row["lastDiaSourceMjdTai"] = grp.midpointMjdTai.max()
        for band in BANDS:
            b = grp[(grp.band == band) & grp.psfFlux.notna()].sort_values("midpointMjdTai")
            row[f"{band}_psfFluxNdata"] = len(b)
            if len(b) == 0:
                continue
            ok = b[b.psfFluxErr.notna()]
            w = 1 / ok.psfFluxErr**2
            row[f"{band}_psfFluxMean"] = np.sum(w * ok.psfFlux) / np.sum(w)
            row[f"{band}_psfFluxMeanErr"] = 1 / np.sqrt(np.sum(w))
            row[f"{band}_psfFluxSigma"] = b.psfFlux.std(ddof=1)
            row[f"{band}_psfFluxMin"] = b.psfFlux.min()
            row[f"{band}_psfFluxMax"] = b.psfFlux.max()
            row[f"{band}_psfFluxErrMean"] = b.psfFluxErr.mean()
            if len(b) > 1:
                slopes = np.abs(np.diff(b.psfFlux) / np.diff(b.midpointMjdTai))
                row[f"{band}_psfFluxMaxSlope"] = slopes.max()
            ws = 1 / b.scienceFluxErr**2
            row[f"{band}_scienceFluxMean"] = np.sum(ws * b.scienceFlux) / np.sum(ws)
            row[f"{band}_scienceFluxMeanErr"] = 1 / np.sqrt(np.sum(ws))
        out.append(row)
    return pd.DataFrame(out).set_index("diaObjectId")


def test_statistics_equal_direct_computation():
    history = make_history()
    got = compute_dia_object_stats(history).set_index("diaObjectId")
    want = direct(history)
    assert sorted(got.index) == sorted(want.index)
    got = got.loc[want.index]
    for column in want.columns:
        np.testing.assert_allclose(
            got[column].to_numpy(float),
            want[column].to_numpy(float),
            rtol=1e-9,
            atol=1e-9,
            err_msg=column,
            equal_nan=True,
        )
    # ra error of the coordinate: 1/sqrt(sum raErr**-2) up to the tiny cos(dec)
    # differences between a source's declination and the object's
    np.testing.assert_allclose(
        got["raErr"].to_numpy(float),
        history.dropna(subset=["diaObjectId"])
        .groupby("diaObjectId")
        .raErr.apply(lambda e: 1 / np.sqrt(np.sum(e**-2)))
        .loc[want.index]
        .to_numpy(float),
        rtol=1e-5,
    )
    # bands never observed: zero counts and NaN statistics
    assert (got["u_psfFluxNdata"] == 0).all()
    assert got["u_psfFluxMean"].isna().all()


def test_mean_position_across_ra_zero():
    history = pd.DataFrame(
        {
            "diaObjectId": [7, 7],
            "band": ["r", "r"],
            "ra": [359.9999, 0.0001],
            "dec": [0.0, 0.0],
            "midpointMjdTai": [60000.0, 60001.0],
            "psfFlux": [1.0, 3.0],
            "psfFluxErr": [1.0, 1.0],
        }
    )
    stats = compute_dia_object_stats(history)
    assert min(stats.ra[0], 360 - stats.ra[0]) < 1e-9
    assert stats.r_psfFluxMaxSlope[0] == pytest.approx(2.0)
    assert stats.r_psfFluxMean[0] == pytest.approx(2.0)
    assert stats.r_psfFluxMeanErr[0] == pytest.approx(1 / np.sqrt(2))


def test_unknown_band_and_missing_columns_raise():
    history = make_history(3)
    with pytest.raises(TaskError, match="unknown bands"):
        compute_dia_object_stats(history.assign(band="q"))
    with pytest.raises(TaskError, match="psfFluxErr"):
        compute_dia_object_stats(history.drop(columns=["psfFluxErr"]))


def test_new_objects_take_the_seeding_source_id():
    sources = pd.DataFrame({"diaSourceId": np.array([11, 12], dtype=np.int64), "ra": [1.0, 2.0]})
    seeded = assign_new_dia_objects(sources)
    assert seeded.diaObjectId.tolist() == [11, 12]
    assert "diaObjectId" not in sources.columns


def test_forced_flux_stats():
    forced = pd.DataFrame(
        {
            "diaObjectId": [1, 1, 1, 2],
            "band": ["g", "g", "r", "g"],
            "psfFlux": [10.0, 20.0, 5.0, np.nan],
            "psfFluxErr": [1.0, 2.0, 1.0, 1.0],
        }
    )
    stats = compute_forced_flux_stats(forced).set_index("diaObjectId")
    w = np.array([1.0, 0.25])
    assert stats.loc[1, "g_fpFluxMean"] == pytest.approx(np.sum(w * [10, 20]) / w.sum())
    assert stats.loc[1, "g_fpFluxMeanErr"] == pytest.approx(1 / np.sqrt(w.sum()))
    assert stats.loc[1, "r_fpFluxMean"] == pytest.approx(5.0)
    assert np.isnan(stats.loc[2, "g_fpFluxMean"])


def test_position_errors_shrink_with_detections_and_keep_the_covariance():
    # n detections of one object, each with the same elongated covariance C
    # (sky, arcsec^2): the mean's covariance is C / n, its position the plain mean
    rng = np.random.default_rng(8)
    dec0 = -45.0
    cosd = np.cos(np.radians(dec0))
    cov = np.array([[0.09, 0.06], [0.06, 0.16]])  # arcsec^2, correlation 0.5
    rows = []
    for n_det, obj_id in ((1, 1), (4, 2), (16, 3)):
        offsets = rng.multivariate_normal([0, 0], cov, n_det)
        rows.append(
            pd.DataFrame(
                {
                    "diaObjectId": obj_id,
                    "band": "g",
                    "ra": 120.0 + offsets[:, 0] / 3600 / cosd,
                    "dec": dec0 + offsets[:, 1] / 3600,
                    "raErr": np.sqrt(cov[0, 0]) / 3600 / cosd,
                    "decErr": np.sqrt(cov[1, 1]) / 3600,
                    "ra_dec_Cov": cov[0, 1] / 3600**2 / cosd,
                    "midpointMjdTai": 60000.0 + np.arange(n_det),
                    "psfFlux": 1.0,
                    "psfFluxErr": 1.0,
                }
            )
        )
        rows[-1]["mean_east"] = offsets[:, 0].mean()
        rows[-1]["mean_north"] = offsets[:, 1].mean()
    history = pd.concat(rows, ignore_index=True)
    stats = compute_dia_object_stats(history).set_index("diaObjectId")
    for obj_id, n_det in ((1, 1), (2, 4), (3, 16)):
        row = stats.loc[obj_id]
        c = np.cos(np.radians(row.dec))
        assert row.raErr * c * 3600 == pytest.approx(np.sqrt(cov[0, 0] / n_det), rel=1e-5)
        assert row.decErr * 3600 == pytest.approx(np.sqrt(cov[1, 1] / n_det), rel=1e-6)
        assert row.ra_dec_Cov * c * 3600**2 == pytest.approx(cov[0, 1] / n_det, rel=1e-5)
        truth = history[history.diaObjectId == obj_id].iloc[0]
        assert (row.ra - 120.0) * 3600 * cosd == pytest.approx(truth.mean_east, abs=1e-6)
        assert (row.dec - dec0) * 3600 == pytest.approx(truth.mean_north, abs=1e-6)


def test_position_is_inverse_covariance_weighted():
    # two detections with different, correlated covariances: the mean is
    # (C1^-1 + C2^-1)^-1 (C1^-1 p1 + C2^-1 p2) and its covariance (C1^-1 + C2^-1)^-1
    c1 = np.array([[0.04, 0.01], [0.01, 0.09]])
    c2 = np.array([[0.25, -0.1], [-0.1, 0.16]])
    p1, p2 = np.array([0.1, -0.2]), np.array([-0.3, 0.4])
    info = np.linalg.inv(c1) + np.linalg.inv(c2)
    want_cov = np.linalg.inv(info)
    want = want_cov @ (np.linalg.inv(c1) @ p1 + np.linalg.inv(c2) @ p2)
    history = pd.DataFrame(
        {
            "diaObjectId": [5, 5, 6],
            "band": ["r", "i", "r"],
            "ra": [10.0 + p1[0] / 3600, 10.0 + p2[0] / 3600, 11.0],
            "dec": [p1[1] / 3600, p2[1] / 3600, 0.0],
            "raErr": [np.sqrt(c1[0, 0]) / 3600, np.sqrt(c2[0, 0]) / 3600, np.nan],
            "decErr": [np.sqrt(c1[1, 1]) / 3600, np.sqrt(c2[1, 1]) / 3600, np.nan],
            "ra_dec_Cov": [c1[0, 1] / 3600**2, c2[0, 1] / 3600**2, np.nan],
            "midpointMjdTai": [60000.0, 60001.0, 60000.0],
            "psfFlux": 1.0,
            "psfFluxErr": 1.0,
        }
    )
    stats = compute_dia_object_stats(history).set_index("diaObjectId")
    row = stats.loc[5]
    assert (row.ra - 10.0) * 3600 == pytest.approx(want[0], abs=1e-6)
    assert row.dec * 3600 == pytest.approx(want[1], abs=1e-6)
    assert row.raErr * 3600 == pytest.approx(np.sqrt(want_cov[0, 0]), rel=1e-6)
    assert row.decErr * 3600 == pytest.approx(np.sqrt(want_cov[1, 1]), rel=1e-6)
    assert row.ra_dec_Cov * 3600**2 == pytest.approx(want_cov[0, 1], rel=1e-6)
    # no errors at all: the plain position and NaN errors
    assert stats.loc[6, "ra"] == pytest.approx(11.0)
    assert np.isnan(stats.loc[6, ["raErr", "decErr", "ra_dec_Cov"]].to_numpy(float)).all()
