"""Cubic-spline sub-pixel shifts with NaN handling."""

import numpy as np
import pytest

from tasks.dcr.errors import DcrError
from tasks.dcr.shift import fill_bad_pixels, shift_and_sum, shift_image


def gaussian(shape, x0, y0, sigma=2.0, flux=1000.0):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("dy, dx", [(0.0, 0.0), (0.37, -1.72), (-2.5, 0.05), (3.0, 1.0)])
def test_shift_moves_a_star_by_subpixel_offsets(dy, dx):
    image = gaussian((64, 64), 30.2, 31.6)
    shifted, bad = shift_image(image, dy, dx)
    expected = gaussian((64, 64), 30.2 + dx, 31.6 + dy)
    assert not bad[12:-12, 12:-12].any()
    # cubic spline on a sigma=2 Gaussian: errors below 0.3 % of the peak
    assert np.max(np.abs(shifted - expected)) < 3e-3 * expected.max()
    assert shifted.sum() == pytest.approx(1000.0, rel=1e-3)


def test_nan_pixels_do_not_spread():
    rng = np.random.default_rng(1)
    image = gaussian((80, 80), 40.0, 40.0) + rng.normal(0, 0.1, (80, 80))
    image[20, 25] = np.nan
    image[60:63, 10:12] = np.nan
    shifted, bad = shift_image(image, 0.4, -0.3)
    assert np.all(np.isfinite(shifted))
    # the flagged region is the bad pixels grown by the interpolation support
    # (plus a frame of ~10 pixels along the image border: the support leaves the
    # image, and the spline prefilter there depends on the boundary rule)
    assert bad[20, 25] and bad[61, 11]
    assert bad[12:-12, 12:-12].sum() < 60
    clean, _ = shift_image(np.nan_to_num(image), 0.4, -0.3)
    far = ~bad
    far[15:26, 20:31] = False
    far[55:68, 5:17] = False
    # away from the NaNs, the result is what it would be without them
    np.testing.assert_allclose(shifted[far], clean[far], atol=1e-4)
    # next to them, unflagged pixels are off by well under the noise (0.1)
    assert np.max(np.abs((shifted - clean)[~bad])) < 0.05


def test_all_nan_image_is_all_bad():
    shifted, bad = shift_image(np.full((16, 16), np.nan), 0.5, 0.5)
    assert bad.all()
    assert np.all(shifted == 0.0)


def test_fill_bad_pixels_uses_neighbours():
    image = np.full((9, 9), 5.0)
    bad = np.zeros((9, 9), bool)
    bad[4, 4] = True
    image[4, 4] = np.nan
    assert fill_bad_pixels(image, bad)[4, 4] == pytest.approx(5.0)


def test_shift_and_sum_rejects_bad_input():
    image = np.zeros((8, 8))
    with pytest.raises(DcrError, match="at least one image"):
        shift_and_sum([], [])
    with pytest.raises(DcrError, match="one \\(dy, dx\\) per image"):
        shift_and_sum([image, image], [(0.1, 0.2)])
    with pytest.raises(DcrError, match="shape differs"):
        shift_and_sum([image, np.zeros((8, 9))], [(0.1, 0.2), (0.0, 0.0)])
