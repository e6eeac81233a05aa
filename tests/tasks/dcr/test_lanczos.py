"""Lanczos-3 resampling kernel, checked against a direct numpy evaluation."""

import numpy as np
import pytest

from tasks.dcr.errors import DcrError
from tasks.dcr.lanczos import lanczos_weights, warp_planes
from tasks.images import MaskPlane

NO_DATA = int(MaskPlane.NO_DATA)
UNUSABLE = int(MaskPlane.NO_DATA | MaskPlane.BAD)


def affine_grid(shape, angle_deg=7.0, scale=1.03, offset=(5.3, 8.9), spacing=16):
    """Mapping grid of an affine transform destination -> source array coordinates."""
    h, w = shape
    gx = np.linspace(0, w - 1, (w - 1) // spacing + 2)
    gy = np.linspace(0, h - 1, (h - 1) // spacing + 2)
    xx, yy = np.meshgrid(gx, gy)
    c, s = np.cos(np.radians(angle_deg)) * scale, np.sin(np.radians(angle_deg)) * scale
    return gx, gy, c * xx - s * yy + offset[0], s * xx + c * yy + offset[1]


def direct_lanczos(image, x, y):
    """sum_ij L(x - i) L(y - j) image[j, i], normalised per axis (numpy, no table)."""
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    taps = np.arange(-2, 4)

    def weights(d):
        w = np.sinc(d) * np.sinc(d / 3.0)
        return w / w.sum(axis=-1, keepdims=True)

    wx = weights(x[:, None] - (ix[:, None] + taps))
    wy = weights(y[:, None] - (iy[:, None] + taps))
    rows = image[(iy[:, None] + taps)[:, :, None], (ix[:, None] + taps)[:, None, :]]
    return np.einsum("na,nab,nb->n", wy, rows, wx)


def warp(image, variance=None, mask=None, shape=(64, 80), **grid_kwargs):
    variance = np.ones_like(image) if variance is None else variance
    mask = np.zeros(image.shape, np.uint32) if mask is None else mask
    grid = affine_grid(shape, **grid_kwargs)
    out = warp_planes(
        image, variance, mask, grid, (0, 0), shape, unusable_bits=UNUSABLE, no_data_bit=NO_DATA
    )
    return grid, out


def test_weights_are_the_normalised_lanczos3_kernel():
    w = lanczos_weights(np.array([0.0, 0.25, 0.5]))
    np.testing.assert_allclose(w[0], [0, 0, 1, 0, 0, 0], atol=1e-15)
    d = 0.25 + 2 - np.arange(6)
    raw = np.sinc(d) * np.sinc(d / 3)
    np.testing.assert_allclose(w[1], raw / raw.sum())
    np.testing.assert_allclose(w[2], w[2][::-1])  # symmetric half-way between pixels


def test_matches_direct_evaluation_and_keeps_flat_images_flat():
    rng = np.random.default_rng(4)
    image = rng.normal(0.0, 1.0, (110, 120)).astype(np.float32)
    grid, (out, out_var, out_mask) = warp(image, variance=np.full_like(image, 4.0))
    gx, gy, mx, my = grid
    yy, xx = np.mgrid[0:64, 0:80].astype(float)
    # the affine map is exactly linear, so the grid interpolation is exact
    c, s = np.cos(np.radians(7.0)) * 1.03, np.sin(np.radians(7.0)) * 1.03
    sx, sy = c * xx - s * yy + 5.3, s * xx + c * yy + 8.9
    inside = (sx > 3) & (sx < 116) & (sy > 3) & (sy < 106)
    assert inside.mean() > 0.9
    expected = direct_lanczos(image.astype(float), sx[inside], sy[inside])
    # table of 4096 offsets per pixel: weights good to ~1e-4 of a unit-noise image
    np.testing.assert_allclose(out[inside], expected, atol=2e-3)
    np.testing.assert_allclose(out_var[inside], 4.0, rtol=1e-6)
    assert not np.any(out_mask[inside] & NO_DATA)


def test_integer_shift_is_exact():
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 1.0, (60, 60)).astype(np.float32)
    _, (out, _, _) = warp(image, shape=(40, 40), angle_deg=0.0, scale=1.0, offset=(7.0, 9.0))
    np.testing.assert_array_equal(out, image[9:49, 7:47])


def test_missing_pixels_and_edges_become_no_data_exactly_on_the_support():
    image = np.ones((110, 120), np.float32)
    mask = np.zeros(image.shape, np.uint32)
    image[50, 60] = np.nan
    mask[30, 20] = MaskPlane.BAD
    mask[70, 90] = MaskPlane.SAT
    grid, (out, out_var, out_mask) = warp(image, mask=mask)
    yy, xx = np.mgrid[0:64, 0:80].astype(float)
    c, s = np.cos(np.radians(7.0)) * 1.03, np.sin(np.radians(7.0)) * 1.03
    sx, sy = c * xx - s * yy + 5.3, s * xx + c * yy + 8.9
    ix, iy = np.floor(sx), np.floor(sy)

    def in_support(px, py):
        return (ix - 2 <= px) & (px <= ix + 3) & (iy - 2 <= py) & (py <= iy + 3)

    outside = (ix - 2 < 0) | (iy - 2 < 0) | (ix + 3 > 119) | (iy + 3 > 109)
    expected_no_data = in_support(60, 50) | in_support(20, 30) | outside
    no_data = (out_mask & NO_DATA) != 0
    assert np.array_equal(no_data, expected_no_data)
    assert np.array_equal(np.isnan(out), no_data) and np.array_equal(np.isnan(out_var), no_data)
    np.testing.assert_allclose(out[~no_data], 1.0, rtol=1e-6)
    # the mask is carried over the bilinear support (2 x 2 pixels), BAD is not copied
    sat = (out_mask & MaskPlane.SAT) != 0
    bilinear = (np.floor(sx) <= 90) & (np.floor(sx) + 1 >= 90) & (np.floor(sy) <= 70)
    bilinear &= np.floor(sy) + 1 >= 70
    assert np.array_equal(sat, bilinear & ~no_data)
    assert not np.any(out_mask & MaskPlane.BAD)


def test_rejects_a_degenerate_grid():
    with pytest.raises(DcrError, match="at least 2 points"):
        warp_planes(
            np.zeros((4, 4)),
            np.ones((4, 4)),
            np.zeros((4, 4), np.uint32),
            (np.array([0.0]), np.array([0.0, 1.0]), np.zeros((2, 1)), np.zeros((2, 1))),
            (0, 0),
            (2, 2),
            unusable_bits=UNUSABLE,
            no_data_bit=NO_DATA,
        )
