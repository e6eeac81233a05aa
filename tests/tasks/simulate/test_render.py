import numpy as np
import pytest

from tasks.images import Box2I, DoubleGaussianPsf, GaussianPsf, MaskPlane, PhotoCalib
from tasks.simulate import make_exposure_with_sources, render_exposure, render_sources


def psf_flux(exposure, x, y):
    """Unweighted PSF fit at fixed positions: F = sum(PD)/sum(PP), err = sqrt(sum(PPV))/sum(PP)."""
    flux, err = [], []
    for xx, yy in zip(x, y, strict=True):
        p = exposure.psf.compute_image(xx, yy)
        box = exposure.psf.stamp_box(xx, yy)
        sl = exposure.bbox.slices(box)
        d = exposure.image[sl].astype(float)
        v = exposure.variance[sl].astype(float)
        s2 = (p * p).sum()
        flux.append((p * d).sum() / s2)
        err.append(np.sqrt((p * p * v).sum()) / s2)
    return np.array(flux), np.array(err)


def test_vectorised_render_equals_per_source_sum():
    psf = DoubleGaussianPsf(1.7, center=(60, 40), scale=60, gradient=(0.1, -0.05))
    bbox = Box2I(-5, 7, 120, 80)
    rng = np.random.default_rng(0)
    x = rng.uniform(-20, 130, 200)  # some stamps hang over the edges or miss the box
    y = rng.uniform(-10, 100, 200)
    flux = rng.uniform(1, 100, 200)
    image = render_sources(bbox, psf, x, y, flux)
    ref = np.zeros(bbox.shape)
    for xx, yy, ff in zip(x, y, flux, strict=True):
        box = psf.stamp_box(xx, yy)
        ov = box.intersection(bbox)
        if ov is not None:
            ref[bbox.slices(ov)] += ff * psf.compute_image(xx, yy)[box.slices(ov)]
    np.testing.assert_allclose(image, ref, rtol=1e-12, atol=1e-12)
    # sources well inside keep all their flux
    inside = (x > 20) & (x < 90) & (y > 30) & (y < 70)
    sub = render_sources(bbox, psf, x[inside], y[inside], flux[inside])
    assert sub.sum() == pytest.approx(flux[inside].sum(), rel=1e-12)


def test_psf_flux_of_injected_stars_matches_truth_within_errors():
    # isolated stars on a grid, so fits do not overlap
    gx, gy = np.meshgrid(np.arange(20, 500, 40.0), np.arange(20, 500, 40.0))
    rng = np.random.default_rng(5)
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    flux = np.exp(rng.uniform(np.log(3e3), np.log(3e5), x.size))
    exposure, truth = make_exposure_with_sources((512, 512), x=x, y=y, flux=flux, seed=11)
    measured, err = psf_flux(exposure, truth["x"], truth["y"])
    calib = exposure.photo_calib
    pull = (calib.instflux_to_nanojansky(measured) - truth["flux"]) / (err * calib.calibration_mean)
    assert x.size == 144
    assert abs(np.mean(pull)) < 0.3
    assert 0.8 < np.std(pull) < 1.2


def test_variance_plane_matches_pixel_noise():
    bbox = Box2I(0, 0, 400, 300)
    psf = GaussianPsf(1.5)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 400, 300), rng.uniform(0, 300, 300)
    flux = rng.uniform(1e4, 1e6, 300)
    result = render_exposure(
        bbox,
        None,
        psf,
        x,
        y,
        flux,
        photo_calib=PhotoCalib(3.0),
        sky=250.0,
        read_noise=6.0,
        rng=rng,
    )
    exp = result.exposure
    resid = (exp.image - result.model) / np.sqrt(exp.variance)
    assert np.std(resid) == pytest.approx(1.0, abs=0.01)
    assert abs(np.mean(resid)) < 0.01
    # bright pixels too: source Poisson noise is in the variance
    bright = result.model > 1000
    assert bright.sum() > 500
    assert np.std(resid[bright]) == pytest.approx(1.0, abs=0.08)


def test_defects_are_flagged():
    bbox = Box2I(0, 0, 200, 200)
    psf = GaussianPsf(1.5)
    rng = np.random.default_rng(4)
    x = np.array([50.2, 150.7])
    y = np.array([60.4, 140.1])
    counts = np.array([5e6, 1e4])  # the first one saturates
    result = render_exposure(
        bbox,
        None,
        psf,
        x,
        y,
        counts,
        photo_calib=PhotoCalib(1.0),
        sky=100.0,
        read_noise=5.0,
        rng=rng,
        saturation=60000.0,
        n_bad_columns=2,
        n_cosmic_rays=10,
    )
    exp = result.exposure
    assert result.source_saturated.tolist() == [True, False]
    sat = (exp.mask & MaskPlane.SAT) != 0
    assert sat[60, 50] and sat.sum() > 5 and np.all(exp.image[sat] == 60000.0)
    for col in result.defects.bad_columns:
        assert np.all((exp.mask[:, col] & MaskPlane.BAD) != 0)
    cr = (exp.mask & MaskPlane.CR) != 0
    assert cr.sum() >= 10
    # cosmic-ray pixels stand far above the noise
    assert np.median((exp.image[cr] - result.model[cr]) / np.sqrt(exp.variance[cr])) > 15
