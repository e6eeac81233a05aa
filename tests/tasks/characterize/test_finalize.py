import numpy as np
import pandas as pd
import pytest

from tasks.characterize.aperture import aperture_weights
from tasks.characterize.finalize import FinalizeCharacterizationTask
from tasks.characterize.psf_model import PixelGridPsf, adaptive_moments
from tasks.core.base import NoWorkFound
from tasks.forcedphot.psf_flux import central_pixel, gather_stamps

VISIT, DET = 1234, 3


def run_task(scene, kernel_size=15):
    task = FinalizeCharacterizationTask()
    task.config.kernelSize = kernel_size
    res = task.run(
        VISIT,
        "i",
        {0: scene["stars"]},
        {0: scene["sources"]},
        {DET: scene["src"]},
        {DET: scene["exposure"]},
    )
    return task, res


@pytest.fixture(scope="module")
def result(scene):
    return run_task(scene)[1]


def truncated_truth(true_psf, x, y, half):
    t = true_psf.compute_images(x, y)
    c = t.shape[1] // 2
    t = t[:, c - half : c + half + 1, c - half : c + half + 1]
    return t / t.sum(axis=(1, 2))[:, None, None]


def test_flags_and_reserve(result, scene):
    out = result.output_table
    row = result.psf_ap_corr_cat.iloc[0]
    assert bool(row["psf_ok"]) and row["reason"] == ""
    assert out["calib_psf_candidate"].sum() == len(scene["x"])  # all isolated and bright
    reserved = out["calib_psf_reserved"].to_numpy()
    assert abs(reserved.sum() - 0.1 * len(out)) <= 1
    assert not (reserved & out["calib_psf_used"].to_numpy()).any()
    assert out["calib_psf_used"].sum() >= 0.8 * (~reserved).sum()
    assert isinstance(result.psfs[DET], PixelGridPsf)


def test_reserved_star_residuals_below_one_percent(result, scene):
    psf = result.psfs[DET]
    out = result.output_table
    r = out["calib_psf_reserved"].to_numpy()
    x, y = out["x"].to_numpy()[r], out["y"].to_numpy()[r]
    half = psf.kernel_size // 2
    model = psf.compute_images(x, y)
    data, _ = gather_stamps(
        scene["exposure"].image, (0, 0), central_pixel(x), central_pixel(y), half
    )
    flux = np.einsum("nij,nij->n", model, data) / np.einsum("nij,nij->n", model, model)
    resid = (data - flux[:, None, None] * model) / (flux[:, None, None] * model).max(
        axis=(1, 2), keepdims=True
    )
    # noise averages out over the reserved stars: what is left is model error
    assert np.abs(resid.mean(axis=0)).max() < 0.01
    # against the noiseless truth (the true PSF truncated to the model's grid), star by star
    truth = truncated_truth(scene["psf"], x, y, half)
    per_star = np.abs(model - truth).max(axis=(1, 2)) / truth.max(axis=(1, 2))
    assert per_star.mean() < 0.01


def test_width_tracks_spatial_variation(result, scene):
    psf, true = result.psfs[DET], scene["psf"]
    xs = np.array([40.0, 320, 600, 40, 600, 320, 160])
    ys = np.array([40.0, 320, 600, 600, 40, 80, 500])
    # like for like: adaptive moments of the true kernel images (less the pixel 1/12)
    kernels = np.stack([true.compute_kernel_image(a, b) for a, b in zip(xs, ys, strict=True)])
    true_w = np.sqrt(adaptive_moments(kernels)[:, :2].mean(axis=1) - 1 / 12)
    fit_w = np.asarray(psf.sigma(xs, ys))
    assert true_w.max() / true_w.min() > 1.3  # the simulated PSF does vary
    assert np.max(np.abs(fit_w / true_w - 1)) < 0.03
    assert np.corrcoef(fit_w, true_w)[0, 1] > 0.99


def test_aperture_correction_field_recovered(result, scene):
    """Truth: aperture(12 px) / PSF flux of the true PSF = a(r) / (flux inside the model grid)."""
    amap = result.ap_corr_maps[DET]
    true = scene["psf"]
    half = result.psfs[DET].kernel_size // 2
    g = np.linspace(30, 610, 7)
    gx, gy = (v.ravel() for v in np.meshgrid(g, g))
    t = true.compute_images(gx, gy)
    c = t.shape[1] // 2
    w = aperture_weights(gx - central_pixel(gx), gy - central_pixel(gy), 12.0, c)
    expected = (w * t).sum(axis=(1, 2)) / t[
        :, c - half : c + half + 1, c - half : c + half + 1
    ].sum(axis=(1, 2))
    assert expected.max() - expected.min() > 0.01  # a real field, not a constant
    assert np.max(np.abs(amap.evaluate(gx, gy) / expected - 1)) < 0.005


def test_failing_detector_gets_a_row(scene):
    task = FinalizeCharacterizationTask()
    task.config.kernelSize = 15
    few = scene["src"].iloc[:4]
    res = task.run(
        VISIT,
        "i",
        {0: scene["stars"]},
        {0: scene["sources"]},
        {DET: few, 9: scene["src"]},
        {DET: scene["exposure"], 9: scene["exposure"]},
    )
    cat = res.psf_ap_corr_cat.set_index("detector")
    assert not cat.loc[DET, "psf_ok"] and "usable PSF stars" in cat.loc[DET, "reason"]
    # detector 9 has no isolated sources of its own (they are all on detector 3)
    assert not cat.loc[9, "psf_ok"]
    assert DET not in res.psfs


def test_no_isolated_sources_is_no_work(scene):
    task = FinalizeCharacterizationTask()
    with pytest.raises(NoWorkFound):
        task.run(
            VISIT,
            "g",
            {0: scene["stars"]},
            {0: scene["sources"]},
            {DET: scene["src"]},
            {DET: scene["exposure"]},
        )


def test_missing_src_columns_fail_the_detector_only(scene):
    task = FinalizeCharacterizationTask()
    bad = pd.DataFrame({"x": [1.0]})
    res = task.run(
        VISIT, "i", {0: scene["stars"]}, {0: scene["sources"]}, {DET: bad}, {DET: scene["exposure"]}
    )
    assert not res.psf_ap_corr_cat["psf_ok"].any()
