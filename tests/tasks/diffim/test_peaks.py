"""Detection core on numpy arrays: completeness, purity, centroids, fluxes."""

import numpy as np
import pytest

from tasks.diffim.measure import mask_bits_near, psf_fluxes
from tasks.diffim.peaks import find_peaks, psf_filter, refine_centroids

SIGMA = 2.0
K = 17


def gaussian_stamps(x, y, sigma=SIGMA, k=K):
    half = k // 2
    cx = np.floor(x + 0.5)
    cy = np.floor(y + 0.5)
    g = np.arange(-half, half + 1)
    gx = np.exp(-((g[None, :] - (x - cx)[:, None]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((g[None, :] - (y - cy)[:, None]) ** 2) / (2 * sigma**2))
    out = gy[:, :, None] * gx[:, None, :]
    return out / out.sum(axis=(1, 2), keepdims=True)


def render(shape, x, y, flux):
    image = np.zeros(shape)
    stamps = gaussian_stamps(x, y) * flux[:, None, None]
    half = K // 2
    for s, xx, yy in zip(
        stamps, np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int), strict=True
    ):
        image[yy - half : yy + half + 1, xx - half : xx + half + 1] += s
    return image


def make_field(rng, n=60, shape=(400, 400), noise=10.0):
    # isolated sources (> 6 sigma apart), so every one is a separate peak
    x, y = np.zeros(0), np.zeros(0)
    while len(x) < n:
        xx, yy = rng.uniform(20, shape[1] - 20), rng.uniform(20, shape[0] - 20)
        if np.all(np.hypot(x - xx, y - yy) > 6 * SIGMA):
            x, y = np.append(x, xx), np.append(y, yy)
    # fluxes from 3 to 60 sigma of a PSF measurement (sigma_F = noise * sqrt(4 pi sigma^2))
    sigma_flux = noise * np.sqrt(4 * np.pi * SIGMA**2)
    snr = rng.uniform(3.0, 60.0, n)
    sign = np.where(rng.random(n) < 0.3, -1.0, 1.0)
    flux = sign * snr * sigma_flux
    image = render(shape, x, y, flux) + rng.normal(0, noise, shape)
    variance = np.full(shape, noise**2)
    return image, variance, x, y, flux, sigma_flux


def match(px, py, x, y, radius=1.5):
    d = np.hypot(px[:, None] - x[None, :], py[:, None] - y[None, :])
    return d.argmin(axis=1), d.min(axis=1) < radius


def test_detects_positive_and_negative_sources_with_correct_fluxes():
    rng = np.random.default_rng(42)
    image, variance, x, y, flux, sigma_flux = make_field(rng)
    kernel = gaussian_stamps(np.array([0.0]), np.array([0.0]))[0]
    filtered, snr = psf_filter(image, variance, kernel)
    peaks = find_peaks(snr, 5.0, min_separation=2, grow=3)
    px, py = refine_centroids(filtered, peaks)
    # every source above 5.5 sigma (so noise cannot push it under 5) is found,
    # with the right polarity
    bright = np.abs(flux) / sigma_flux > 5.5
    idx, ok = match(x[bright], y[bright], px, py)
    assert ok.all()
    assert np.all(np.sign(peaks.snr[idx]) == np.sign(flux[bright]))
    # nothing is found that is not a true source (no spurious peaks)
    truth_idx, real = match(px, py, x, y, radius=2.5)
    assert real.all(), f"{(~real).sum()} spurious peaks"
    # centroids: error ~ sqrt(2) sigma / snr
    err = np.hypot(px - x[truth_idx], py - y[truth_idx])
    expected = np.sqrt(2) * SIGMA / np.abs(flux[truth_idx] / sigma_flux)
    assert np.median(err / expected) < 1.5
    # PSF fluxes at the centroids agree with the truth within errors
    fit = psf_fluxes(image, variance, np.zeros(image.shape, bool), gaussian_stamps, px, py)
    pull = (fit.flux - flux[truth_idx]) / fit.flux_err
    assert fit.flux_err == pytest.approx(np.full(len(px), sigma_flux), rel=0.02)
    assert abs(np.mean(pull)) < 0.4
    assert 0.7 < np.std(pull) < 1.4
    # reduced chi2 of the PSF fits is ~1
    assert np.median(fit.chi2 / (K * K - 1)) == pytest.approx(1.0, abs=0.1)
    # bbox sizes cover the footprint of bright sources
    assert np.all(peaks.bbox_size >= 7)


def test_pure_noise_has_few_false_positives():
    rng = np.random.default_rng(7)
    shape = (512, 512)
    image = rng.normal(0, 5.0, shape)
    variance = np.full(shape, 25.0)
    kernel = gaussian_stamps(np.array([0.0]), np.array([0.0]))[0]
    _, snr = psf_filter(image, variance, kernel)
    # the significance image has unit variance
    assert np.std(snr[20:-20, 20:-20]) == pytest.approx(1.0, abs=0.05)
    peaks = find_peaks(snr, 5.0)
    assert len(peaks) <= 1


def test_bad_pixels_are_ignored_and_flagged():
    rng = np.random.default_rng(3)
    image, variance, x, y, flux, sigma_flux = make_field(rng, n=10)
    bad = np.zeros(image.shape, bool)
    bad[:, :50] = True
    image[:, :50] = 1e6  # garbage under the bad region must not be detected
    kernel = gaussian_stamps(np.array([0.0]), np.array([0.0]))[0]
    filtered, snr = psf_filter(image, variance, kernel, bad=bad)
    assert np.all(snr[:, :50] == 0)
    peaks = find_peaks(snr, 5.0)
    assert np.all(peaks.ix >= 50)
    fit = psf_fluxes(
        image, variance, bad, gaussian_stamps, np.array([50.0, 200.0]), np.array([200.0, 200.0])
    )
    assert fit.flag_edge[0] and not fit.flag_edge[1]
    fit = psf_fluxes(image, variance, bad, gaussian_stamps, np.array([20.0]), np.array([200.0]))
    assert fit.flag_no_good[0] and np.isnan(fit.flux[0])
    mask = np.zeros(image.shape, np.uint32)
    mask[100, 100] = 4
    bits = mask_bits_near(mask, np.array([101, 110]), np.array([101, 110]), 1)
    assert list(bits) == [4, 0]
