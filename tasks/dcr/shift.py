"""Sub-pixel shifts of images with a cubic spline, keeping bad pixels local.

A cubic-spline shift (``scipy.ndimage.shift``, order 3) prefilters the whole
row/column, so a single NaN would spread over the image and a hard zero in
place of a missing pixel would ring for several pixels.  We therefore fill
bad pixels with a smooth local estimate (normalised Gaussian convolution of
the good pixels) before the spline, shift, and flag as bad every output pixel
whose interpolation support touched a bad input pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["fill_bad_pixels", "shift_image"]


def fill_bad_pixels(image: np.ndarray, bad: np.ndarray, size: int = 5) -> np.ndarray:
    """Return a copy of ``image`` with ``bad`` pixels replaced by a local mean.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-d image; values of bad pixels (NaN included) are ignored.
    bad : `numpy.ndarray` of `bool`
        Pixels to replace.
    size : `int`, optional
        Width of the box over which good neighbours are averaged; pixels with
        no good neighbour in it are set to 0.

    Returns
    -------
    filled : `numpy.ndarray` (float32)
    """
    filled = np.array(image, dtype=np.float32)
    if not bad.any():
        return filled
    filled[bad] = 0.0
    good = (~bad).astype(np.float32)
    estimate = np.zeros(filled.shape, dtype=np.float32)
    # normalised box convolution: separable and O(1) per pixel; pixels with no
    # good neighbour in the box (deep inside a hole) stay 0
    num = ndimage.uniform_filter(filled, size, mode="constant")
    den = ndimage.uniform_filter(good, size, mode="constant")
    ok = den > 1e-3
    estimate[ok] = num[ok] / den[ok]
    filled[bad] = estimate[bad]
    return filled


def _bspline3(x: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel."""
    ax = np.abs(x)
    return np.where(
        ax < 1.0, 2.0 / 3.0 - ax**2 + 0.5 * ax**3, np.where(ax < 2.0, (2.0 - ax) ** 3 / 6.0, 0.0)
    )


def _taps(shift: float) -> tuple[int, np.ndarray, np.ndarray]:
    """Integer part, source offsets and weights of a uniform cubic-spline shift.

    ``out[i] = sum_m w[m] * c[i + offsets[m]]`` for spline coefficients ``c``.
    """
    n = int(np.floor(shift))
    t = shift - n
    m = np.arange(-2, 2)
    weights = _bspline3(-t - m)
    keep = weights > 1e-12
    return n, (m - n)[keep], weights[keep]


def _shift_axis(coeff: np.ndarray, shift: float, axis: int, fill: float) -> np.ndarray:
    """Apply a uniform shift along one axis to spline coefficients (or OR a boolean)."""
    _, offsets, weights = _taps(shift)
    size = coeff.shape[axis]
    if coeff.dtype == bool:
        out = np.zeros_like(coeff)
        combine = np.logical_or
    else:
        out = np.zeros(coeff.shape, dtype=np.float64)
    for off, w in zip(offsets, weights, strict=True):
        dst = [slice(None)] * coeff.ndim
        src = [slice(None)] * coeff.ndim
        # out[i] += w * c[i + off] for 0 <= i + off < size
        dst[axis] = slice(max(-off, 0), min(size - off, size))
        src[axis] = slice(max(off, 0), min(size + off, size))
        if dst[axis].start >= dst[axis].stop:
            continue
        if coeff.dtype == bool:
            combine(out[tuple(dst)], coeff[tuple(src)], out=out[tuple(dst)])
        else:
            out[tuple(dst)] += w * coeff[tuple(src)]
        if fill:  # the part of the support that falls outside the image
            edge = [slice(None)] * coeff.ndim
            if off > 0:
                edge[axis] = slice(size - off, size)
            elif off < 0:
                edge[axis] = slice(0, -off)
            else:
                continue
            if coeff.dtype == bool:
                out[tuple(edge)] = True
            else:
                out[tuple(edge)] += w * fill
    return out


def shift_image(
    image: np.ndarray,
    dy: float,
    dx: float,
    bad: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift an image by a sub-pixel offset with a cubic spline (zero fill outside).

    The content at array position ``(i, j)`` moves to ``(i + dy, j + dx)``.
    This equals ``scipy.ndimage.shift(image, (dy, dx), order=3)`` away from the
    edges, computed separably: the spline prefilter (``spline_filter1d``)
    along each axis, then the four B-spline taps of the (uniform) shift,
    which are the same for every pixel.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-d image; NaN pixels count as bad.
    dy, dx : `float`
        Shift along rows (y) and columns (x), pixels.
    bad : `numpy.ndarray` of `bool`, optional
        Extra pixels to treat as missing.

    Returns
    -------
    shifted : `numpy.ndarray` (float32)
        Shifted image; 0 where the bad mask is set.
    shifted_bad : `numpy.ndarray` of `bool`
        Output pixels whose interpolation support (the four taps along each
        axis) touched a missing input pixel, or came from outside the image;
        beyond that support the ringing of the filled value is negligible.
    """
    image = np.asarray(image)
    missing = ~np.isfinite(image)
    if bad is not None:
        missing |= bad
    filled = fill_bad_pixels(image, missing) if missing.any() else image
    coeff = ndimage.spline_filter(filled, order=3, output=np.float32, mode="mirror")
    shifted = _shift_axis(_shift_axis(coeff, dy, 0, 0.0), dx, 1, 0.0)
    # the border pixels' spline support leaves the image: the frame is
    # separable, so its shifted footprint is computed on two 1-d arrays
    rows = np.zeros(image.shape[0], dtype=bool)
    cols = np.zeros(image.shape[1], dtype=bool)
    rows[[0, -1]] = True
    cols[[0, -1]] = True
    row_band = _shift_axis(rows, dy, 0, True)
    col_band = _shift_axis(cols, dx, 0, True)
    shifted_bad = row_band[:, None] | col_band[None, :]
    if missing.any():
        shifted_bad |= _shift_axis(_shift_axis(missing, dy, 0, True), dx, 1, True)
    shifted[shifted_bad] = 0.0
    return shifted, shifted_bad
