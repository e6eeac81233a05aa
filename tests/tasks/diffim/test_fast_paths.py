"""The fast paths of subtraction and detection agree with plain reference computations.

Tiled FFT convolution against `scipy.signal.fftconvolve`; the spatially
varying kernel against a per-pixel evaluation; the sparse peak finder
against full-image labelling and maximum filters (scipy); the box dilation
against `scipy.ndimage.maximum_filter`; the second detection pass (filtered
image minus filtered models) against filtering the residual image.
"""

import numpy as np
import pytest
from scipy import ndimage, signal

from tasks.diffim.detect import _filtered_without_models
from tasks.diffim.fftconv import TiledSpectrum, convolve_same
from tasks.diffim.kernel import MatchingKernel, alard_lupton_basis
from tasks.diffim.measure import mask_bits_near, subtract_psf_models
from tasks.diffim.peaks import filter_image, find_peaks
from tasks.diffim.pixel_loops import dilate_box


@pytest.mark.parametrize("shape", [(37, 53), (300, 211), (700, 650)])
@pytest.mark.parametrize("ksize", [3, 11, 25])
def test_tiled_convolution_matches_scipy(shape, ksize):
    rng = np.random.default_rng(ksize + shape[0])
    image = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=(ksize, ksize))
    expected = signal.fftconvolve(image.astype(float), kernel, mode="same")
    got = convolve_same(image, kernel)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.abs(got - expected).max() < 2e-5 * np.abs(expected).max()


def test_one_transform_serves_kernels_of_any_size_up_to_the_halo():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(400, 300)).astype(np.float32)
    spectrum = TiledSpectrum(image, 12)
    for ksize in (5, 25):
        kernel = rng.normal(size=(ksize, ksize))
        expected = signal.fftconvolve(image.astype(float), kernel, mode="same")
        assert np.allclose(spectrum.convolve(kernel), expected, atol=2e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="halo"):
        spectrum.convolve(np.ones((27, 27)))
    with pytest.raises(ValueError, match="odd"):
        spectrum.convolve(np.ones((4, 4)))


def test_spatially_varying_kernel_matches_a_per_pixel_evaluation():
    rng = np.random.default_rng(2)
    shape = (90, 70)
    image = rng.normal(size=shape).astype(np.float32) * 10
    basis = alard_lupton_basis(4, (0.8, 1.6), (2, 1))
    coefficients = rng.normal(size=(len(basis), 3)) * np.array([1.0, 0.3, 0.3])
    kernel = MatchingKernel(basis, coefficients, 0.0, (0.0, 0.0, 69.0, 89.0))
    got = kernel.convolve(image)
    padded = np.pad(image.astype(float), 4)
    for y, x in [(0, 0), (45, 35), (89, 69), (10, 60), (70, 5)]:
        k = kernel.kernel_at(x, y)
        # convolution: sum_u K(u) I(p - u)
        window = padded[y : y + 9, x : x + 9][::-1, ::-1]
        assert got[y, x] == pytest.approx(float((k * window).sum()), abs=1e-3)


def _reference_peaks(snr, threshold, min_separation, grow):
    """The finder this replaced: full-image labelling and maximum filters."""
    rows = []
    n_footprints = 0
    for sign in (1, -1):
        signed = sign * snr
        above = signed >= threshold
        labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        local_max = ndimage.maximum_filter(signed, size=2 * min_separation + 1, mode="nearest")
        iy, ix = np.nonzero(above & (signed == local_max))
        slices = ndimage.find_objects(labels)
        for yy, xx in zip(iy, ix, strict=True):
            s = slices[labels[yy, xx] - 1]
            box = (
                max(s[1].start - grow, 0),
                max(s[0].start - grow, 0),
                min(s[1].stop - 1 + grow, snr.shape[1] - 1),
                min(s[0].stop - 1 + grow, snr.shape[0] - 1),
            )
            rows.append((xx, yy, sign, labels[yy, xx] + n_footprints, box))
        n_footprints += n
    return sorted(rows)


@pytest.mark.parametrize("threshold", [0.5, 2.5])
def test_sparse_peak_finder_matches_the_full_image_one(threshold):
    rng = np.random.default_rng(3)
    snr = ndimage.gaussian_filter(rng.normal(size=(250, 180)), 2.0) * 6
    snr[0, :] = 4.0  # footprints touching the edges
    snr[:, -1] = -4.0
    snr = snr.astype(np.float32)
    peaks = find_peaks(snr, threshold, min_separation=2, grow=3)
    got = sorted(
        (int(a), int(b), int(c), int(d), tuple(int(v) for v in e))
        for a, b, c, d, e in zip(
            peaks.ix, peaks.iy, peaks.polarity, peaks.footprint, peaks.bbox, strict=True
        )
    )
    assert got == _reference_peaks(snr, threshold, 2, 3)
    assert len(got) > 50
    # sorted by decreasing |snr|
    assert np.all(np.diff(np.abs(peaks.snr)) <= 0)


@pytest.mark.parametrize("radius", [1, 4, 12])
def test_box_dilation_matches_the_maximum_filter(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((300, 257)) < 0.002
    mask[0, 5] = mask[-1, -1] = True
    expected = ndimage.maximum_filter(mask, size=2 * radius + 1)
    assert np.array_equal(dilate_box(mask, radius), expected)
    assert not dilate_box(np.zeros((10, 10), bool), radius).any()


def test_second_pass_filtered_residual_by_linearity():
    rng = np.random.default_rng(4)
    shape = (160, 140)
    g = np.arange(-8, 9)
    psf = np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * 2.0**2))
    psf /= psf.sum()

    def psf_images(x, y):
        return np.broadcast_to(psf, (len(x), 17, 17)).copy()

    image = rng.normal(0, 5, shape)
    variance = np.full(shape, 25.0)
    bad = np.zeros(shape, bool)
    bad[40:44, :] = True  # unusable pixels under a model are zeroed by the filter
    x = np.array([20.0, 70.0, 135.0, 3.0])
    y = np.array([42.0, 80.0, 150.0, 5.0])
    flux = np.array([5000.0, -800.0, 1200.0, 300.0])
    kernel = psf[4:-4, 4:-4]
    first = filter_image(image, variance, kernel, bad)
    residual = subtract_psf_models(image, psf_images, x, y, flux)
    expected = filter_image(residual, variance, kernel, bad)
    got = _filtered_without_models(first, psf_images, x, y, flux)
    assert np.abs(got - expected.filtered).max() < 1e-3 * np.abs(expected.filtered).max()


def test_gathered_centre_mask_bits_equal_the_per_source_squares():
    rng = np.random.default_rng(0)
    mask = (rng.integers(0, 2, (50, 60)) * rng.integers(1, 256, (50, 60))).astype(np.uint32)
    cx, cy = rng.integers(0, 60, 400), rng.integers(0, 50, 400)
    for half in (1, 2):
        gathered = mask_bits_near(mask, cx, cy, half)
        per_source = mask_bits_near(mask, cx, cy, np.full(len(cx), half))
        np.testing.assert_array_equal(gathered, per_source)
    assert mask_bits_near(mask, cx, cy, 1).any()
