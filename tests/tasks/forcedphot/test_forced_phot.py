import numpy as np
import pandas as pd
import pytest

from apdb.schema import required_columns, table_columns
from tasks.characterize.apcorr import PSF_FLUX_ERR_FIELD, PSF_FLUX_FIELD, ApCorrMap
from tasks.characterize.chebyshev import ChebyshevBoundedField
from tasks.core.ids import split_ids
from tasks.forcedphot import ForcedPhotCcdFromDataFrameTask, ForcedPhotError
from tasks.images import Box2I, GaussianPsf


@pytest.fixture
def scene(helpers, rng):
    psf = GaussianPsf(1.6)
    x, y = helpers.grid_positions(256, 256, 24, 14, rng)
    sci_flux = 10 ** rng.uniform(3, 4, x.size)
    dif_flux = rng.uniform(-500, 500, x.size)
    science = helpers.make_exposure(
        helpers.render_stars((256, 256), psf, x, y, sci_flux), np.full((256, 256), 10.0), psf
    )
    diffim = helpers.make_exposure(
        helpers.render_stars((256, 256), psf, x, y, dif_flux), np.full((256, 256), 20.0), None
    )
    ra, dec = science.pixel_to_sky(x, y)
    objects = pd.DataFrame({"diaObjectId": np.arange(x.size) + 1000, "ra": ra, "dec": dec})
    return science, diffim, objects, sci_flux, dif_flux


def test_measure_dia_objects_rows_in_apdb_schema(scene):
    science, diffim, objects, sci_flux, dif_flux = scene
    task = ForcedPhotCcdFromDataFrameTask()
    out = task.measure_dia_objects(objects, science, diffim)
    schema = {c.name for c in table_columns("DiaForcedSource")}
    assert set(out.columns) <= schema
    assert set(required_columns("DiaForcedSource")) <= set(out.columns)
    assert len(out) == len(objects)
    visit, detector, seq = split_ids(out["diaForcedSourceId"].to_numpy())
    assert (visit == 42).all() and (detector == 7).all()
    assert np.array_equal(np.sort(seq), np.arange(len(out)))
    assert (out["band"] == "r").all() and (out["midpointMjdTai"] == 60000.5).all()
    order = out["diaObjectId"].to_numpy() - 1000
    calib = science.photo_calib.calibration_mean
    # float32 images: noiseless fluxes recovered to float32 precision, in nJy
    assert np.allclose(out["scienceFlux"], sci_flux[order] * calib, rtol=1e-5)
    assert np.allclose(out["psfFlux"], dif_flux[order] * calib, rtol=1e-5, atol=1e-2)
    p2 = (science.psf.compute_images(np.array([100.0]), np.array([100.0])) ** 2).sum()
    assert np.allclose(out["psfFluxErr"], np.sqrt(20.0 / p2) * calib, rtol=0.05)


def test_aperture_correction_applied(scene):
    science, diffim, objects, sci_flux, dif_flux = scene
    bbox = (-0.5, -0.5, 255.5, 255.5)
    field = ChebyshevBoundedField(bbox, 1, [1.05, 0.02, -0.01])
    science.ap_corr_map = ApCorrMap({PSF_FLUX_FIELD: field, PSF_FLUX_ERR_FIELD: field})
    out = ForcedPhotCcdFromDataFrameTask().measure_dia_objects(objects, science, diffim)
    order = out["diaObjectId"].to_numpy() - 1000
    x, y = science.sky_to_pixel(out["ra"].to_numpy(), out["dec"].to_numpy())
    expected = sci_flux[order] * field.evaluate(x, y) * science.photo_calib.calibration_mean
    assert np.allclose(out["scienceFlux"], expected, rtol=1e-5)
    plain = ForcedPhotCcdFromDataFrameTask()
    plain.config.doApplyApCorr = False
    out2 = plain.measure_dia_objects(objects, science, diffim)
    assert np.allclose(out2["scienceFlux"], sci_flux[order] * 2.5, rtol=1e-5)


def test_df2refcat_dedup_bbox_and_nan(scene):
    science, _, objects, _, _ = scene
    task = ForcedPhotCcdFromDataFrameTask()
    extra = objects.iloc[:5].copy()  # duplicates of the first five
    ra_edge, dec_edge = science.pixel_to_sky(
        np.array([-0.49, 255.6, 10.0]), np.array([5.0, 5.0, 10.0])
    )
    edge = pd.DataFrame({"diaObjectId": [1, 2, 3], "ra": ra_edge, "dec": dec_edge})
    edge.loc[2, "ra"] = np.nan
    ref = task.df2RefCat([objects, extra, edge], science.bbox, science.wcs)
    assert ref["diaObjectId"].is_unique
    assert 1 in set(ref["diaObjectId"]) and 2 not in set(ref["diaObjectId"])
    assert 3 not in set(ref["diaObjectId"])
    assert len(ref) == len(objects) + 1
    small = Box2I(0, 0, 100, 100)
    inner = task.df2RefCat([objects], small, science.wcs)
    assert ((inner["x"] < 99.5) & (inner["y"] < 99.5)).all()
    merged = task.mergeAndFilterReferences(science, [objects, extra])
    assert len(merged) == len(objects)


def test_bad_input_errors(scene):
    science, diffim, objects, _, _ = scene
    task = ForcedPhotCcdFromDataFrameTask()
    with pytest.raises(ForcedPhotError):
        task.df2SourceCat(objects.drop(columns=["ra"]))
    bad = objects.copy()
    bad["ra"] = "x"
    with pytest.raises(ForcedPhotError):
        task.df2SourceCat(bad)
    science.psf = None
    with pytest.raises(ForcedPhotError):
        task.measure_dia_objects(objects, science, diffim)


def test_empty_objects(scene):
    science, diffim, objects, _, _ = scene
    out = ForcedPhotCcdFromDataFrameTask().measure_dia_objects(objects.iloc[:0], science, diffim)
    assert len(out) == 0 and "diaForcedSourceId" in out.columns
