"""Sub-pixel shifts of small images with a separable Lanczos kernel.

Used to centre star stamps on their pixel grid when a PSF model is fitted,
and to place the centred PSF model at a source's sub-pixel position when it
is evaluated.  Shifts of many stamps are done at once as batched matrix
products ``W_y @ stamp @ W_x.T``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lanczos", "shift_stamps", "shift_weights"]


def lanczos(t: np.ndarray, order: int = 3) -> np.ndarray:
    """Lanczos kernel ``sinc(t) sinc(t / order)`` for ``|t| < order``, else 0."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.abs(t) < order, np.sinc(t) * np.sinc(t / order), 0.0)


def shift_weights(shift: np.ndarray, out_half: int, in_half: int, order: int = 3) -> np.ndarray:
    """Interpolation matrices of a 1-D shift for many stamps.

    Output sample ``i`` (at offset ``i - out_half`` from the centre) takes
    the input function at offset ``i - out_half - shift``: the content moves
    by ``+shift`` pixels.

    Parameters
    ----------
    shift : `numpy.ndarray`, shape ``(n,)``
        Shift of each stamp in pixels.
    out_half, in_half : `int`
        Half-widths of the output and input samples.
    order : `int`, optional
        Lanczos order.

    Returns
    -------
    weights : `numpy.ndarray`, shape ``(n, 2*out_half+1, 2*in_half+1)``
        Rows normalised to sum 1.
    """
    shift = np.atleast_1d(np.asarray(shift, dtype=np.float64))
    out_off = np.arange(-out_half, out_half + 1, dtype=np.float64)
    in_off = np.arange(-in_half, in_half + 1, dtype=np.float64)
    t = out_off[None, :, None] - shift[:, None, None] - in_off[None, None, :]
    weights = lanczos(t, order)
    sums = weights.sum(axis=2, keepdims=True)
    return weights / np.where(sums != 0, sums, 1.0)


def shift_stamps(
    stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray, out_half: int, order: int = 3
) -> np.ndarray:
    """Shift many square stamps by sub-pixel amounts.

    Parameters
    ----------
    stamps : `numpy.ndarray`, shape ``(n, m, m)`` with ``m`` odd
        Input stamps, centred on their central pixel.
    dx, dy : `numpy.ndarray`, shape ``(n,)``
        Shifts (pixels) along x (columns) and y (rows).
    out_half : `int`
        Half-width of the output stamps.
    order : `int`, optional
        Lanczos order.

    Returns
    -------
    shifted : `numpy.ndarray`, shape ``(n, 2*out_half+1, 2*out_half+1)``
    """
    in_half = stamps.shape[1] // 2
    wx = shift_weights(dx, out_half, in_half, order)
    wy = shift_weights(dy, out_half, in_half, order)
    return wy @ stamps @ wx.transpose(0, 2, 1)
