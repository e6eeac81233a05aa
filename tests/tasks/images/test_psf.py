import numpy as np
import pytest
from astropy.io import fits

from tasks.images import DoubleGaussianPsf, GaussianPsf, ImageError, psf_from_hdu, psf_to_hdu
from tasks.images.persistence import register_persistable


def _centroid(img):
    k = img.shape[0]
    t = np.arange(k) - k // 2
    return (img.sum(axis=0) * t).sum() / img.sum(), (img.sum(axis=1) * t).sum() / img.sum()


def _moments(img):
    k = img.shape[0]
    t = np.arange(k) - k // 2
    xx, yy = np.meshgrid(t, t)
    return (img * xx**2).sum(), (img * yy**2).sum(), (img * xx * yy).sum()


@pytest.mark.parametrize(
    "psf",
    [
        GaussianPsf(1.7),
        DoubleGaussianPsf(1.5, center=(500, 500), scale=500, gradient=(0.1, -0.05), curvature=0.05),
    ],
)
def test_kernel_is_normalised_and_centred(psf):
    for x, y in [(100.0, 200.0), (500.3, 700.8), (12.49, 3.51)]:
        img = psf.compute_image(x, y)
        assert img.shape == (psf.kernel_size, psf.kernel_size) and psf.kernel_size % 2 == 1
        assert img.sum() == pytest.approx(1.0, abs=1e-12)
        cx, cy = _centroid(img)
        assert cx == pytest.approx(x - np.floor(x + 0.5), abs=2e-3)
        assert cy == pytest.approx(y - np.floor(y + 0.5), abs=2e-3)
        kern = psf.compute_kernel_image(x, y)
        assert _centroid(kern) == pytest.approx((0.0, 0.0), abs=1e-10)
        # measured pixel moments = model moments + 1/12 (pixel integration)
        ixx, iyy, ixy = psf.compute_shape(x, y)
        mxx, myy, mxy = _moments(kern)
        assert mxx == pytest.approx(float(ixx) + 1 / 12, rel=0.01)
        assert myy == pytest.approx(float(iyy) + 1 / 12, rel=0.01)
        assert mxy == pytest.approx(0.0, abs=1e-9)


def test_vectorised_images_match_single():
    psf = DoubleGaussianPsf(1.5, center=(0, 0), scale=1000, gradient=(0.2, 0.1))
    x = np.array([10.2, 900.7, 450.5])
    y = np.array([30.9, 20.1, 999.4])
    stack = psf.compute_images(x, y)
    for n in range(3):
        np.testing.assert_allclose(stack[n], psf.compute_image(x[n], y[n]), atol=1e-15)


def test_width_varies_smoothly():
    psf = DoubleGaussianPsf(1.5, center=(1000, 1000), scale=1000, gradient=(0.1, 0.0))
    s = psf.sigma(np.array([0.0, 1000.0, 2000.0]), np.array([1000.0, 1000.0, 1000.0]))
    assert s[0] < s[1] < s[2]
    assert s[2] / s[1] == pytest.approx(1.1)


@pytest.mark.parametrize(
    "psf",
    [
        GaussianPsf(2.1, kernel_size=21),
        DoubleGaussianPsf(1.3, 2.5, 0.2, (3.5, 7.25), 812.5, (0.1 / 3, -0.02), 0.01),
    ],
)
def test_psf_hdu_round_trip(psf, tmp_path):
    hdu = psf_to_hdu(psf)
    path = tmp_path / "psf.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    with fits.open(path) as hdul:
        back = psf_from_hdu(hdul["PSF"])
    assert back == psf
    np.testing.assert_array_equal(back.compute_image(10.3, 4.4), psf.compute_image(10.3, 4.4))


def test_registry_refuses_incomplete_class_and_default_shift_is_normalised():
    class NoIo:
        persistence_name = "NoIo"

    with pytest.raises(ImageError):
        register_persistable(NoIo)

    class Tabulated(GaussianPsf):
        # exercise the base-class spline shift through a subclass without compute_image
        compute_image = GaussianPsf.__mro__[1].compute_image

    psf = Tabulated(1.8)
    img = psf.compute_image(5.3, 7.8)
    assert img.sum() == pytest.approx(1.0)
    cx, cy = _centroid(img)
    assert cx == pytest.approx(0.3, abs=0.02) and cy == pytest.approx(-0.2, abs=0.02)


def test_bad_psf_parameters():
    with pytest.raises(ImageError):
        GaussianPsf(-1.0)
    with pytest.raises(ImageError):
        DoubleGaussianPsf(1.0, scale=100, gradient=(2.0, 0.0))
