import numpy as np
import pytest

from tasks.characterize.psf_fit import PsfFitError, fit_pixel_grid_psf
from tasks.characterize.psf_model import PixelGridPsf, adaptive_moments
from tasks.core.base import TaskError
from tasks.images import GaussianPsf, psf_from_hdu, psf_to_hdu


def gaussian_model(sigma=2.0, size=21):
    kernel = GaussianPsf(sigma, size).compute_kernel_image(0, 0)
    coeffs = np.zeros((6, size, size))
    coeffs[0] = kernel
    return PixelGridPsf(coeffs, (-0.5, -0.5, 99.5, 99.5), 2)


def test_images_sum_to_one_and_are_centred():
    psf = gaussian_model()
    x, y = np.array([10.3, 50.0, 70.6]), np.array([20.8, 50.0, 30.45])
    images = psf.compute_images(x, y)
    assert np.allclose(images.sum(axis=(1, 2)), 1.0)
    off = np.arange(-10, 11)
    cx = (images * off[None, None, :]).sum(axis=(1, 2))
    cy = (images * off[None, :, None]).sum(axis=(1, 2))
    assert np.allclose(cx, x - np.floor(x + 0.5), atol=1e-4)
    assert np.allclose(cy, y - np.floor(y + 0.5), atol=1e-4)
    # the Fourier shift of a pixel-integrated Gaussian matches the exact one
    exact = GaussianPsf(2.0, 21).compute_images(x, y)
    assert np.abs(images - exact).max() < 1e-5 * exact.max()
    assert np.allclose(psf.compute_image(10.3, 20.8), images[0])


def test_shape_and_sigma():
    psf = gaussian_model(sigma=1.8)
    ixx, iyy, ixy = psf.compute_shape(30.0, 40.0)
    # moments of the continuous profile, as GaussianPsf.compute_shape gives them
    assert ixx == pytest.approx(1.8**2, rel=2e-3) and iyy == pytest.approx(1.8**2, rel=2e-3)
    assert abs(ixy) < 1e-8
    widths = psf.sigma(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert np.allclose(widths, 1.8, rtol=1e-3)
    moments = adaptive_moments(GaussianPsf(3.0, 41).compute_images(np.zeros(1), np.zeros(1)))
    assert moments[0, 0] == pytest.approx(9.0 + 1 / 12, rel=0.01)


def test_fits_round_trip():
    rng = np.random.default_rng(0)
    psf = PixelGridPsf(rng.normal(size=(3, 7, 7)) + 5, (0.0, 1.0, 200.0, 300.0), 1)
    back = psf_from_hdu(psf_to_hdu(psf))
    assert isinstance(back, PixelGridPsf)
    assert np.array_equal(back.coefficients, psf.coefficients)
    assert back.bbox == psf.bbox and back.order == 1


def test_bad_construction():
    with pytest.raises(TaskError):
        PixelGridPsf(np.zeros((6, 4, 4)), (0, 0, 1, 1), 2)
    with pytest.raises(TaskError):
        PixelGridPsf(np.zeros((5, 5, 5)), (0, 0, 1, 1), 2)


def test_fit_needs_enough_clean_stars():
    image = np.zeros((100, 100))
    var = np.ones_like(image)
    x = np.array([50.0, 3.0, 60.0])
    y = np.array([50.0, 50.0, 20.0])
    with pytest.raises(PsfFitError, match="usable PSF stars"):
        fit_pixel_grid_psf(image, var, None, (0, 0), x, y, (-0.5, -0.5, 99.5, 99.5), 15)


def test_fit_rejects_outliers():
    rng = np.random.default_rng(3)
    true = GaussianPsf(1.8, 31)
    g = np.arange(30, 480, 45.0)
    gx, gy = (v.ravel() for v in np.meshgrid(g, g))
    x, y = gx + rng.uniform(-0.5, 0.5, gx.size), gy + rng.uniform(-0.5, 0.5, gx.size)
    image = np.zeros((500, 500))
    stamps = true.compute_images(x, y) * 1e5
    for k in range(x.size):  # test set-up only
        cx, cy = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))
        image[cy - 15 : cy + 16, cx - 15 : cx + 16] += stamps[k]
    # three "stars" are really doubles: a companion 3 px away
    for k in (5, 40, 77):
        cx, cy = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))
        image[cy - 15 : cy + 16, cx - 12 : cx + 19] += 0.5 * stamps[k]
    var = 100.0 + image
    image = image + rng.normal(size=image.shape) * np.sqrt(var)
    res = fit_pixel_grid_psf(image, var, None, (0, 0), x, y, (-0.5, -0.5, 499.5, 499.5), 21)
    assert not res.used[[5, 40, 77]].any()
    assert res.used.sum() >= x.size - 6
    assert res.psf.sigma(250.0, 250.0) == pytest.approx(1.8, rel=0.01)


def test_stars_crossed_by_bad_columns_are_patched_and_used():
    rng = np.random.default_rng(8)
    true = GaussianPsf(1.8, 31)
    g = np.arange(30, 480, 45.0)
    gx, gy = (v.ravel() for v in np.meshgrid(g, g))
    x, y = gx + rng.uniform(-0.5, 0.5, gx.size), gy + rng.uniform(-0.5, 0.5, gx.size)
    image = np.zeros((500, 500))
    stamps = true.compute_images(x, y) * 1e5
    for k in range(x.size):  # test set-up only
        cx, cy = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))
        image[cy - 15 : cy + 16, cx - 15 : cx + 16] += stamps[k]
    var = 100.0 + image
    image = image + rng.normal(size=image.shape) * np.sqrt(var)
    mask = np.zeros(image.shape, dtype=np.uint32)
    bad_cols = [int(np.floor(x[3] + 0.5)) + 8, int(np.floor(x[50] + 0.5)) - 10]
    for col in bad_cols:
        mask[:, col] = 1
        image[:, col] = 5e4  # garbage in the bad column
    res = fit_pixel_grid_psf(
        image, var, mask, (0, 0), x, y, (-0.5, -0.5, 499.5, 499.5), 21, bad_mask=1
    )
    crossed = np.zeros(x.size, dtype=bool)
    for col in bad_cols:
        crossed |= np.abs(np.floor(x + 0.5) - col) <= 14  # the grown stamp has half-width 14
    assert crossed.sum() >= 10
    assert res.used[crossed].mean() > 0.8  # patched, not dropped
    model = res.psf.compute_images(x, y)
    exact = true.compute_images(x, y)[:, 5:-5, 5:-5]
    assert np.abs(model - exact).max(axis=(1, 2)).mean() < 0.01 * exact.max()


def test_adaptive_moments_of_undersampled_psfs_stay_finite():
    """A ZTF-like PSF (FWHM ~1.4 px): the weight is floored, the width still comes out."""
    from tasks.characterize.psf_model import adaptive_moments
    from tasks.images.psf import GaussianPsf

    for sigma, tolerance in ((0.6, 0.05), (0.8, 0.02), (1.5, 0.01)):
        kernel = GaussianPsf(sigma, kernel_size=25).compute_kernel_image(0.0, 0.0)
        ixx, iyy, ixy = adaptive_moments(kernel[None])[0]
        assert np.sqrt(ixx - 1 / 12) == pytest.approx(sigma, rel=tolerance)
        assert np.sqrt(iyy - 1 / 12) == pytest.approx(sigma, rel=tolerance)
        assert abs(ixy) < 1e-9
