"""DiaPipelineTask on a simulated survey with known truth, against SQLite and PostgreSQL.

The survey: one detector revisited 10 times (small dithers, bands g/r/i, one
day apart) over a field with static-position objects detected in almost every
visit, variable objects detected in about 60 % of visits, transients alive for
three consecutive visits, and Solar System objects at new positions every
visit with predicted positions.  DiaSource tables are built from the truth
positions plus 0.1" Gaussian noise per axis (what association consumes).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.sky import Cone
from tasks.association.diaobject_stats import BANDS
from tasks.core.ids import make_ids
from tasks.images import Box2I, Exposure, GaussianPsf, PhotoCalib, VisitInfo, make_tan_wcs
from tasks.pipeline.diapipe import DiaPipelineError, DiaPipelineTask, VisitAlreadyStoredError

ARCSEC = 1.0 / 3600.0
SIZE = 512
SCALE = 0.2
RA0, DEC0 = 150.0, 2.0
DETECTOR = 7
NOISE = 0.1  # arcsec per axis


@dataclass
class Survey:
    """Truth of the simulated field and the inputs of each visit."""

    kinds: dict[int, str] = field(default_factory=dict)  # truth id -> kind
    truth_of_source: dict[int, int] = field(default_factory=dict)  # diaSourceId -> truth id
    visits: list[dict] = field(default_factory=list)


def make_exposure(visit, band, mjd, ra_c, dec_c, rng):
    wcs = make_tan_wcs(ra_c, dec_c, (SIZE / 2, SIZE / 2), SCALE)
    info = VisitInfo(
        visit_id=visit,
        exposure_time=30.0,
        midpoint=Time(mjd, format="mjd", scale="tai"),
        band=band,
        boresight_ra=ra_c,
        boresight_dec=dec_c,
        boresight_az_alt=(0.0, 60.0),
        airmass=1.2,
        parallactic_angle=0.0,
        rotator_angle=0.0,
    )
    shape = (SIZE, SIZE)

    def image():
        return Exposure(
            rng.normal(0, 1, shape).astype(np.float32),
            None,
            np.ones(shape, np.float32),
            wcs,
            Box2I(0, 0, SIZE, SIZE),
            psf=GaussianPsf(1.5),
            photo_calib=PhotoCalib(1.0),
            visit_info=info,
            detector=DETECTOR,
        )

    return image(), image()


def make_survey(n_visits=10, seed=11) -> Survey:
    rng = np.random.default_rng(seed)
    survey = Survey()
    cosd = np.cos(np.radians(DEC0))
    half = (SIZE / 2 - 30) * SCALE * ARCSEC  # keep truth 30 px inside the detector

    def place(n):
        return (
            RA0 + rng.uniform(-half, half, n) / cosd,
            DEC0 + rng.uniform(-half, half, n),
        )

    n_static, n_var, n_tran = 120, 120, 20
    ra, dec = place(n_static + n_var + n_tran)
    kind = np.array(["static"] * n_static + ["variable"] * n_var + ["transient"] * n_tran)
    truth_ids = np.arange(len(ra)) + 1
    survey.kinds = dict(zip(truth_ids.tolist(), kind.tolist(), strict=True))
    base_flux = rng.uniform(500, 5000, len(ra))
    tran_start = rng.integers(0, n_visits - 2, n_tran)
    for v in range(n_visits):
        visit = 1000 + v
        band = "gri"[v % 3]
        mjd = 60100.0 + v * 1.0 + 0.01 * rng.random()
        ra_c = RA0 + rng.uniform(-3, 3) * ARCSEC / cosd
        dec_c = DEC0 + rng.uniform(-3, 3) * ARCSEC
        exposure, diffim = make_exposure(visit, band, mjd, ra_c, dec_c, rng)
        detected = np.zeros(len(ra), dtype=bool)
        detected[:n_static] = rng.random(n_static) < 0.97
        detected[n_static : n_static + n_var] = rng.random(n_var) < 0.6
        detected[n_static + n_var :] = (v >= tran_start) & (v < tran_start + 3)
        flux = base_flux * np.where(kind == "variable", np.sin(0.7 * v + truth_ids), 1.0)
        idx = np.flatnonzero(detected)
        # Solar System objects: new positions each visit, at least 2" from any
        # truth object (closer passages are ambiguous for position-only matching)
        n_sso = 6
        sso_ra, sso_dec = place(4 * n_sso)
        sep = np.hypot((sso_ra[:, None] - ra[None, :]) * cosd, sso_dec[:, None] - dec[None, :]).min(
            axis=1
        )
        clear = np.flatnonzero(sep > 2.0 * ARCSEC)[:n_sso]
        sso_ra, sso_dec = sso_ra[clear], sso_dec[clear]
        sso_ids = np.arange(n_sso) + 900_000 + 10 * v
        sso_table = pd.DataFrame(
            {
                "ssObjectId": sso_ids,
                "ra": sso_ra + rng.normal(0, 0.15, n_sso) * ARCSEC / cosd,
                "dec": sso_dec + rng.normal(0, 0.15, n_sso) * ARCSEC,
                "mag": 21.0,
            }
        )
        all_ra = np.concatenate((ra[idx], sso_ra))
        all_dec = np.concatenate((dec[idx], sso_dec))
        all_truth = np.concatenate((truth_ids[idx], -sso_ids))
        all_flux = np.concatenate((flux[idx], np.full(n_sso, 800.0)))
        n = len(all_ra)
        order = rng.permutation(n)
        all_ra, all_dec = all_ra[order], all_dec[order]
        all_truth, all_flux = all_truth[order], all_flux[order]
        src_ra = all_ra + rng.normal(0, NOISE, n) * ARCSEC / cosd
        src_dec = all_dec + rng.normal(0, NOISE, n) * ARCSEC
        x, y = exposure.sky_to_pixel(src_ra, src_dec)
        ids = make_ids(visit, DETECTOR, n)
        err = np.full(n, 100.0)
        sources = pd.DataFrame(
            {
                "diaSourceId": ids,
                "visit": visit,
                "detector": DETECTOR,
                "band": band,
                "midpointMjdTai": mjd,
                "ra": src_ra,
                "dec": src_dec,
                "raErr": NOISE * ARCSEC / cosd,
                "decErr": NOISE * ARCSEC,
                "x": x,
                "y": y,
                "psfFlux": all_flux + rng.normal(0, err),
                "psfFluxErr": err,
                "scienceFlux": all_flux + 1000 + rng.normal(0, err),
                "scienceFluxErr": err,
                "snr": np.abs(all_flux) / err,
                "bboxSize": 21,
            }
        )
        survey.truth_of_source.update(zip(ids.tolist(), all_truth.tolist(), strict=True))
        survey.visits.append(
            {
                "sources": sources,
                "exposure": exposure,
                "diffim": diffim,
                "sso": sso_table,
                "time": Time(mjd, format="mjd", scale="tai"),
            }
        )
    return survey


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def survey_apdb_url(request, tmp_path_factory):
    """An empty APDB for the whole module on each backend (the conftest's servers)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("diapipe") / "apdb.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    yield server.create_database("diapipe_survey", template=template)
    server.drop_database("diapipe_survey")


@pytest.fixture(scope="module")
def processed(survey_apdb_url):
    """Run the whole survey through DiaPipelineTask once per backend."""
    survey = make_survey()
    apdb = Apdb.from_url(survey_apdb_url)
    task = DiaPipelineTask()
    results = []
    for v in survey.visits:
        results.append(task.run(v["sources"], v["diffim"], v["exposure"], None, apdb, v["sso"]))
    yield survey, apdb, results, task
    apdb.close()


def _stored_sources(apdb, survey):
    end = survey.visits[-1]["time"] + 1.0 * u.day
    return apdb.get_dia_sources(end, months=12)


def test_association_completeness_purity_and_transients(processed):
    survey, apdb, results, _ = processed
    stored = _stored_sources(apdb, survey)
    n_input = sum(len(v["sources"]) for v in survey.visits)
    assert len(stored) == n_input  # nothing lost, nothing duplicated
    truth = stored["diaSourceId"].map(survey.truth_of_source)
    is_sso = truth < 0
    # Solar System sources: right SSO, never a DiaObject
    assert stored.loc[is_sso, "diaObjectId"].isna().all()
    assert (stored.loc[is_sso, "ssObjectId"] == -truth[is_sso]).all()
    objects = stored.loc[~is_sso].assign(truth=truth[~is_sso])
    assert objects["diaObjectId"].notna().all()
    assert objects["ssObjectId"].isna().all()
    sso_source_ids = set(stored.loc[is_sso, "diaSourceId"])
    latest = pd.concat([r.diaObjects for r in results]).drop_duplicates("diaObjectId", keep="last")
    assert not sso_source_ids & set(latest["diaObjectId"])

    main = objects.groupby("truth")["diaObjectId"].agg(lambda s: s.mode().iloc[0])
    majority = objects.groupby("diaObjectId")["truth"].agg(lambda s: s.mode().iloc[0])
    objects["main"] = objects["truth"].map(main)
    objects["majority"] = objects["diaObjectId"].map(majority)
    for kind in ("static", "variable"):
        sel = objects["truth"].map(survey.kinds) == kind
        completeness = np.mean(objects.loc[sel, "diaObjectId"] == objects.loc[sel, "main"])
        purity = np.mean(objects.loc[sel, "truth"] == objects.loc[sel, "majority"])
        assert completeness >= 0.995, (kind, completeness)
        assert purity >= 0.995, (kind, purity)
    tran = objects[objects["truth"].map(survey.kinds) == "transient"]
    per_transient = tran.groupby("truth")["diaObjectId"].nunique()
    assert (per_transient == 1).all()
    assert len(per_transient) == 20
    # no transient's DiaObject holds anyone else's sources
    tran_objects = set(tran["diaObjectId"])
    holders = objects.loc[objects["diaObjectId"].isin(tran_objects), "truth"]
    assert (holders.map(survey.kinds) == "transient").all()
    # one DiaObject per truth object (each seeded once)
    assert objects["diaObjectId"].nunique() == objects["truth"].nunique()
    # new objects are seeded by their first source
    first = objects.sort_values("midpointMjdTai").groupby("diaObjectId")["diaSourceId"].first()
    assert (first.index == first.to_numpy()).all()


def test_results_for_the_alert_packager(processed):
    survey, apdb, results, task = processed
    last = results[-1]
    n_sso = len(survey.visits[-1]["sso"])
    assert last.nAssociatedSsObjects == n_sso
    assert len(last.ssSources) == n_sso
    assert len(last.associatedDiaSources) == len(survey.visits[-1]["sources"])
    assert set(last.associatedDiaSources["diaObjectId"].dropna()) <= set(
        last.diaObjects["diaObjectId"]
    )
    assert last.nNewDiaObjects == len(last.newDiaObjects)
    first_sources = survey.visits[0]["sources"]["diaSourceId"].map(survey.truth_of_source)
    assert results[0].nNewDiaObjects == int((first_sources > 0).sum())
    assert results[0].nUpdatedDiaObjects == 0
    # histories were loaded before the store: no source of this visit in them
    visit = survey.visits[-1]["sources"]["visit"].iloc[0]
    assert len(last.diaSourceHistory) > 0
    assert (last.diaSourceHistory["visit"] != visit).all()
    assert (last.diaForcedSourceHistory["visit"] != visit).all()
    # forced photometry: every object with >= 2 detections on the detector, nothing else
    stored = _stored_sources(apdb, survey)
    counts = stored.dropna(subset=["diaObjectId"]).groupby("diaObjectId").size()
    forced = last.diaForcedSources
    assert len(forced) > 100
    assert (counts.reindex(forced["diaObjectId"]).to_numpy() >= 2).all()
    assert forced["diaForcedSourceId"].is_unique
    meta = task.getFullMetadata()
    assert "diaPipe.associator" in meta and "storeDuration" in meta["diaPipe"]


def _direct_band_stats(stored: pd.DataFrame) -> pd.DataFrame:
    """Reference statistics per (object, band), straight from the definitions with pandas."""
    d = stored.sort_values("midpointMjdTai").assign(
        w=lambda t: 1.0 / t["psfFluxErr"] ** 2,
        ws=lambda t: 1.0 / t["scienceFluxErr"] ** 2,
    )
    d = d.assign(wf=d["w"] * d["psfFlux"], wsf=d["ws"] * d["scienceFlux"])
    g = d.groupby(["diaObjectId", "band"])
    d["slope"] = (g["psfFlux"].diff() / g["midpointMjdTai"].diff()).abs()
    g = d.groupby(["diaObjectId", "band"])
    sums = g[["w", "wf", "ws", "wsf"]].sum()
    return pd.DataFrame(
        {
            "psfFluxNdata": g.size(),
            "psfFluxMean": sums["wf"] / sums["w"],
            "psfFluxMeanErr": 1 / np.sqrt(sums["w"]),
            "psfFluxSigma": g["psfFlux"].std(ddof=1),
            "psfFluxMin": g["psfFlux"].min(),
            "psfFluxMax": g["psfFlux"].max(),
            "psfFluxMaxSlope": g["slope"].max(),
            "psfFluxErrMean": g["psfFluxErr"].mean(),
            "scienceFluxMean": sums["wsf"] / sums["ws"],
            "scienceFluxMeanErr": 1 / np.sqrt(sums["ws"]),
        }
    )


def test_statistics_equal_direct_computation_on_stored_history(processed):
    survey, apdb, results, _ = processed
    stored = _stored_sources(apdb, survey).dropna(subset=["diaObjectId"])
    stored = stored.astype({"diaObjectId": np.int64})
    db_objects = apdb.get_dia_objects(Cone(RA0, DEC0, 0.1)).set_index("diaObjectId")
    assert sorted(db_objects.index) == sorted(stored["diaObjectId"].unique())
    per_band = _direct_band_stats(stored)
    rows = db_objects.index.get_indexer(per_band.index.get_level_values(0))
    cols = [BANDS.index(b) for b in per_band.index.get_level_values(1)]
    for stat in per_band.columns:
        table = np.column_stack([db_objects[f"{b}_{stat}"].to_numpy(float) for b in BANDS])
        np.testing.assert_allclose(
            table[rows, cols],
            per_band[stat].to_numpy(float),
            rtol=1e-5,
            atol=1e-3,
            equal_nan=True,
            err_msg=stat,
        )
    # bands an object was never seen in: zero count, NaN statistics
    seen = set(per_band.index)
    for obj_id in db_objects.index[:20]:
        for band in BANDS:
            if (obj_id, band) not in seen:
                assert db_objects.loc[obj_id, f"{band}_psfFluxNdata"] == 0
                assert np.isnan(db_objects.loc[obj_id, f"{band}_psfFluxMean"])
    counts = stored.groupby("diaObjectId").size()
    assert (db_objects.loc[counts.index, "nDiaSources"] == counts).all()
    mean_ra = stored.groupby("diaObjectId")["ra"].mean()
    mean_dec = stored.groupby("diaObjectId")["dec"].mean()
    sep = np.hypot(
        (db_objects.loc[mean_ra.index, "ra"] - mean_ra) * np.cos(np.radians(DEC0)),
        db_objects.loc[mean_dec.index, "dec"] - mean_dec,
    )
    assert (sep * 3600 < 1e-4).all()
    # the latest versions returned by the pipeline are what the database holds
    latest = (
        pd.concat([r.diaObjects for r in results])
        .drop_duplicates("diaObjectId", keep="last")
        .set_index("diaObjectId")
    )
    np.testing.assert_allclose(
        latest.loc[db_objects.index, "r_psfFluxMean"], db_objects["r_psfFluxMean"], rtol=1e-6
    )


def test_rerun_of_stored_visit_is_refused_and_writes_nothing(processed):
    survey, apdb, _, _ = processed
    before = apdb.row_counts()
    v = survey.visits[3]
    with pytest.raises(VisitAlreadyStoredError, match=r"visit 1003 detector 7 is already stored"):
        DiaPipelineTask().run(v["sources"], v["diffim"], v["exposure"], None, apdb, v["sso"])
    assert apdb.row_counts() == before
    try:
        DiaPipelineTask().run(v["sources"], v["diffim"], v["exposure"], None, apdb, v["sso"])
    except VisitAlreadyStoredError as exc:
        assert sorted(exc.duplicate_ids) == sorted(v["sources"]["diaSourceId"])


def test_bad_input_is_refused_before_anything_is_written(processed):
    survey, apdb, _, _ = processed
    before = apdb.row_counts()
    v = survey.visits[0]
    task = DiaPipelineTask()
    with pytest.raises(DiaPipelineError, match="required columns"):
        task.run(v["sources"].drop(columns=["psfFlux"]), v["diffim"], v["exposure"], None, apdb)
    dup = pd.concat([v["sources"], v["sources"].iloc[:2]])
    with pytest.raises(DiaPipelineError, match="duplicate diaSourceId"):
        task.run(dup, v["diffim"], v["exposure"], None, apdb)
    with pytest.raises(DiaPipelineError, match="band"):
        task.run(v["sources"].assign(band="q"), v["diffim"], v["exposure"], None, apdb)
    with pytest.raises(DiaPipelineError, match="difference image"):
        task.run(v["sources"], None, v["exposure"], None, apdb)
    assert apdb.row_counts() == before


def test_flagged_and_empty_visits(processed):
    survey, apdb, results, _ = processed
    last = survey.visits[-1]
    rng = np.random.default_rng(4)
    known = results[-1].diaObjects.iloc[0]
    mjd = last["time"].mjd + 1.0
    exposure, diffim = make_exposure(5000, "r", mjd, RA0, DEC0, rng)
    # two positions at least 3" from every known DiaObject
    objects = apdb.get_dia_objects(Cone(RA0, DEC0, 0.1))
    cand_ra = RA0 + rng.uniform(-30, 30, 200) * ARCSEC
    cand_dec = DEC0 + rng.uniform(-30, 30, 200) * ARCSEC
    sep = np.hypot(
        (cand_ra[:, None] - objects["ra"].to_numpy()[None, :]) * np.cos(np.radians(DEC0)),
        cand_dec[:, None] - objects["dec"].to_numpy()[None, :],
    ).min(axis=1)
    free = np.flatnonzero(sep > 3 * ARCSEC)[:2]
    ra = np.concatenate(([known["ra"]], cand_ra[free]))
    dec = np.concatenate(([known["dec"]], cand_dec[free]))
    x, y = exposure.sky_to_pixel(ra, dec)
    sources = pd.DataFrame(
        {
            "diaSourceId": make_ids(5000, DETECTOR, 3),
            "ra": ra,
            "dec": dec,
            "x": x,
            "y": y,
            "psfFlux": [100.0, 200.0, 300.0],
            "psfFluxErr": 10.0,
            "bboxSize": 21,
            "pixelFlags_saturatedCenter": [True, True, False],
        }
    )
    result = DiaPipelineTask().run(sources, diffim, exposure, None, apdb)
    # flagged but associated: kept; flagged and new: dropped; unflagged new: a new object
    assert result.nUpdatedDiaObjects == 1
    assert result.nNewDiaObjects == 1
    assert result.droppedDiaSources["diaSourceId"].tolist() == [sources["diaSourceId"][1]]
    assert sorted(result.associatedDiaSources["diaSourceId"]) == sorted(
        sources["diaSourceId"][[0, 2]]
    )
    assert result.nAssociatedSsObjects == 0 and result.nTotalSsObjects == 0
    # a visit with no DiaSources: nothing associated, forced photometry still runs
    exposure, diffim = make_exposure(5001, "g", mjd + 1.0, RA0, DEC0, rng)
    empty = sources.iloc[:0]
    result = DiaPipelineTask().run(empty, diffim, exposure, None, apdb)
    assert result.nNewDiaObjects == 0 and len(result.associatedDiaSources) == 0
    assert result.nDiaForcedSources > 100
    assert apdb.contains_visit_detector(5001, DETECTOR)
