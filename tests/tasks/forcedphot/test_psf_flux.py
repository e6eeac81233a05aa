import numpy as np
import pytest

from tasks.forcedphot.psf_flux import gather_stamps, measure_psf_flux, psf_images_at
from tasks.images import DoubleGaussianPsf, GaussianPsf, MaskPlane


def test_gather_stamps_positions_and_edges():
    image = np.arange(20 * 30, dtype=float).reshape(20, 30)  # origin (10, 100)
    stamps, inside = gather_stamps(image, (10, 100), np.array([15, 10]), np.array([105, 100]), 1)
    # stamp [k, i, j] is at parent (cx - 1 + j, cy - 1 + i) -> array [cy-1+i-100, cx-1+j-10]
    assert np.array_equal(stamps[0], image[4:7, 4:7])
    assert inside[0].all()
    assert not inside[1, 0].any() and not inside[1, :, 0].any() and inside[1, 1:, 1:].all()
    assert np.array_equal(stamps[1, 1:, 1:], image[0:2, 0:2])
    assert np.all(stamps[1, 0] == 0)


def test_noiseless_fluxes_exact(helpers, rng):
    psf = DoubleGaussianPsf(
        1.6,
        wing_ratio=1.8,
        wing_fraction=0.08,
        center=(200, 200),
        scale=200,
        gradient=(0.1, -0.1),
        curvature=0.05,
        kernel_size=21,
    )
    x, y = helpers.grid_positions(400, 400, 22, 15, rng)
    flux = 10 ** rng.uniform(2, 6, x.size)
    image = helpers.render_stars((400, 400), psf, x, y, flux)
    variance = np.full(image.shape, 25.0)
    res = measure_psf_flux(image, variance, None, (0, 0), x, y, psf_images_at(psf, x, y))
    assert x.size > 250
    assert np.max(np.abs(res.flux / flux - 1)) < 1e-6
    # error formula: sqrt(sum P^2 V) / sum P^2 = 5 / sqrt(sum P^2) with constant V
    p = psf.compute_images(x, y)
    assert np.allclose(res.flux_err, 5.0 / np.sqrt((p**2).sum(axis=(1, 2))), rtol=1e-10)
    assert not res.flag.any() and not res.flag_edge.any()


def test_noisy_pulls_are_unit_normal(helpers, rng):
    psf = GaussianPsf(1.5)  # kernel 17 pixels
    x, y = helpers.grid_positions(1300, 1300, 20, 12, rng)
    assert x.size >= 4000
    flux = 10 ** rng.uniform(2.5, 4.5, x.size)
    truth = helpers.render_stars((1300, 1300), psf, x, y, flux)
    variance = 50.0 + truth  # sky + source Poisson-like variance
    image = truth + rng.normal(size=truth.shape) * np.sqrt(variance)
    res = measure_psf_flux(image, variance, None, (0, 0), x, y, psf_images_at(psf, x, y))
    pulls = (res.flux - flux) / res.flux_err
    assert abs(pulls.mean()) < 0.05
    assert 0.95 < pulls.std() < 1.05


def test_flags_edge_bad_nan(helpers):
    psf = GaussianPsf(1.5)
    shape = (60, 80)
    x = np.array([40.2, 1.3, 40.0, 20.0, np.nan, 500.0, 60.0])
    y = np.array([30.1, 30.0, 10.0, 45.0, 20.0, 500.0, 15.0])
    flux = np.array([1000.0, 1000.0, 1000.0, 1000.0, 1.0, 1.0, 1000.0])
    ok = np.isfinite(x) & (x < 100)
    image = np.zeros(shape)
    image += helpers.render_stars(shape, psf, x[ok], y[ok], flux[ok])
    variance = np.ones(shape)
    mask = np.zeros(shape, dtype=np.uint32)
    mask[2:19, 32:49] = MaskPlane.BAD  # all of source 2's footprint
    image[45, 20] = np.nan  # centre pixel of source 3
    mask[15, 60] = MaskPlane.SAT  # centre of source 6: masked, but other pixels are good
    image[15, 60] = 1e6
    res = measure_psf_flux(
        image,
        variance,
        mask,
        (0, 0),
        x,
        y,
        psf_images_at(psf, x, y),
        bad_mask=int(MaskPlane.BAD | MaskPlane.SAT),
    )
    assert not res.flag[0] and res.flux[0] == pytest.approx(1000.0, rel=1e-9)
    # partly off the image: flagged edge, measured on the part inside
    assert res.flag_edge[1] and not res.flag[1]
    assert res.flux[1] == pytest.approx(1000.0, rel=1e-6)
    assert res.flag_no_good_pixels[2] and np.isnan(res.flux[2])
    assert res.flag_nan[3] and np.isnan(res.flux[3])
    assert res.flag_nan[4] and res.flag[4] and np.isnan(res.flux[4])
    assert res.flag_edge[5] and res.flag_no_good_pixels[5] and np.isnan(res.flux[5])
    # the saturated pixel is excluded: the flux comes from the wings, unbiased
    assert not res.flag[6] and res.flux[6] == pytest.approx(1000.0, rel=1e-6)
    assert res.n_good[6] == 17 * 17 - 1


def test_shape_validation():
    with pytest.raises(ValueError):
        measure_psf_flux(
            np.zeros((5, 5)), np.ones((5, 5)), None, (0, 0), [1.0], [1.0], np.ones((2, 3, 3))
        )
