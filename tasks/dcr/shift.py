"""Sub-pixel shifts of images with a cubic spline, keeping bad pixels local.

A cubic-spline shift (``scipy.ndimage.shift``, order 3) prefilters the whole
row/column, so a single NaN would spread over the image and a hard zero in
place of a missing pixel would ring for several pixels.  We therefore fill
bad pixels with a smooth local estimate (normalised box average of the good
pixels) before the spline, shift, and flag as bad every output pixel whose
interpolation support touched a bad input pixel.

A uniform shift is separable: the spline prefilter ``P`` (the inverse of
B-spline sampling: a causal and an anti-causal first-order recursion along
each axis, as in ``scipy.ndimage.spline_filter`` with ``mode="mirror"``)
followed by the four B-spline taps ``T`` of the shift along each axis.  Both
are convolutions, so they commute, and a sum of shifted images -- the DCR
model's sub-filters -- needs a single prefilter:
``sum_k T_k P I_k = P sum_k T_k I_k`` (`shift_and_sum`).  The taps and the
prefilter are compiled with numba: both run along rows in memory order, where
``scipy.ndimage`` walks columns with a stride along axis 0 (3x slower there).
The prefilter's boundary condition then acts on the shifted sum rather than
on each image, which changes values within a few pixels of the array edges
(the recursion forgets its start by a factor 0.27 per pixel): those pixels
are flagged as bad, like the tap support that leaves the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from scipy import ndimage

from tasks.core.threads import run_in_chunks
from tasks.dcr.errors import DcrError

__all__ = [
    "fill_bad_pixels",
    "has_usable_pixel",
    "shift_and_sum",
    "shift_image",
    "spline_prefilter",
]


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


def _taps(shift: float) -> tuple[int, np.ndarray]:
    """First source offset and the four weights of a uniform cubic-spline shift.

    ``out[i] = sum_m w[m] * c[i + first + m]`` for spline coefficients ``c``.
    """
    n = int(np.floor(shift))
    t = shift - n
    m = np.arange(-2, 2)
    return -2 - n, _bspline3(-t - m)


_POLE = math.sqrt(3.0) - 2.0  # pole of the cubic B-spline prefilter
_EDGE = 7  # edge pixels whose prefiltered value depends on the boundary rule (0.27**7 < 1e-4)


@numba.njit(cache=True, nogil=True)
def _prefilter_rows(c):  # pragma: no cover - compiled
    """Cubic B-spline prefilter along axis 1, in place (mirror boundary).

    The recursion runs along each row; blocks of rows are transposed into a
    small buffer so that it advances over all rows of a block at once.
    """
    h, w = c.shape
    block = 32
    buf = np.empty((w, block), dtype=c.dtype)
    for i0 in range(0, h, block):
        n = min(block, h - i0)
        for b in range(n):
            for j in range(w):
                buf[j, b] = c[i0 + b, j]
        _prefilter_columns(buf[:, :n])
        for b in range(n):
            for j in range(w):
                c[i0 + b, j] = buf[j, b]


@numba.njit(cache=True, nogil=True)
def _prefilter_columns(c):  # pragma: no cover - compiled
    """Cubic B-spline prefilter along axis 0, in place, sweeping whole rows."""
    h, w = c.shape
    z = _POLE
    n0 = min(h, 28)
    gain = (1.0 - z) * (1.0 - 1.0 / z)
    tail = z / (z * z - 1.0)
    first = np.zeros(w)
    zk = 1.0
    for k in range(n0):
        for j in range(w):
            first[j] += zk * c[k, j]
        zk *= z
    for j in range(w):
        c[0, j] = first[j]
    for i in range(1, h):
        for j in range(w):
            c[i, j] += z * c[i - 1, j]
    for j in range(w):
        c[h - 1, j] = tail * (c[h - 1, j] + z * c[h - 2, j])
    for i in range(h - 2, -1, -1):
        for j in range(w):
            c[i, j] = z * (c[i + 1, j] - c[i, j])
    for i in range(h):
        for j in range(w):
            c[i, j] *= gain


@numba.njit(cache=True, nogil=True)
def _add_taps(image, first_y, wy, first_x, wx, out, row0, row1):  # pragma: no cover - compiled
    """``out[i, j] += sum_m sum_n wy[m] wx[n] image[i + first_y + m, j + first_x + n]``.

    For the rows ``row0 <= i < row1``; four taps per axis; rows and columns
    beyond the image repeat its edge.
    """
    h, w = image.shape
    pad = abs(first_x) + 4
    row = np.empty(w + 2 * pad)
    for i in range(row0, row1):
        r0 = image[min(max(i + first_y, 0), h - 1)]
        r1 = image[min(max(i + first_y + 1, 0), h - 1)]
        r2 = image[min(max(i + first_y + 2, 0), h - 1)]
        r3 = image[min(max(i + first_y + 3, 0), h - 1)]
        for j in range(w):
            row[pad + j] = wy[0] * r0[j] + wy[1] * r1[j] + wy[2] * r2[j] + wy[3] * r3[j]
        for j in range(pad):
            row[j] = row[pad]
            row[pad + w + j] = row[pad + w - 1]
        base = pad + first_x
        for j in range(w):
            out[i, j] += (
                wx[0] * row[base + j]
                + wx[1] * row[base + j + 1]
                + wx[2] * row[base + j + 2]
                + wx[3] * row[base + j + 3]
            )


def _shift_taps(image: np.ndarray, dy: float, dx: float, out: np.ndarray) -> None:
    """Add the B-spline taps of a shift, applied along both axes, to ``out``."""
    first_y, wy = _taps(dy)
    first_x, wx = _taps(dx)
    run_in_chunks(
        lambda start, stop: _add_taps(image, first_y, wy, first_x, wx, out, start, stop),
        image.shape[0],
    )


def spline_prefilter(image: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of an image (``scipy.ndimage.spline_filter``, mirror).

    Parameters
    ----------
    image : `numpy.ndarray`
        2-d image.

    Returns
    -------
    coefficients : `numpy.ndarray` (float32)
        A new array.
    """
    coeff = np.array(image, dtype=np.float32, order="C")
    _prefilter(coeff)
    return coeff


def _prefilter(coeff: np.ndarray) -> None:
    """Prefilter in place along both axes, columns and rows split between threads."""
    if coeff.shape[0] > 1:
        run_in_chunks(lambda a, b: _prefilter_columns(coeff[:, a:b]), coeff.shape[1])
    if coeff.shape[1] > 1:
        run_in_chunks(lambda a, b: _prefilter_rows(coeff[a:b]), coeff.shape[0])


def _shift_support(flags: np.ndarray, shift: float, axis: int, outside: bool) -> np.ndarray:
    """Output pixels along ``axis`` whose taps touch a flagged input (or the outside)."""
    first, weights = _taps(shift)
    offsets = first + np.flatnonzero(weights > 1e-12)
    size = flags.shape[axis]
    out = np.zeros_like(flags)
    for off in offsets:
        dst = [slice(None)] * flags.ndim
        src = [slice(None)] * flags.ndim
        # out[i] |= flags[i + off] for 0 <= i + off < size
        dst[axis] = slice(max(-off, 0), min(size - off, size))
        src[axis] = slice(max(off, 0), min(size + off, size))
        if dst[axis].start < dst[axis].stop:
            np.logical_or(out[tuple(dst)], flags[tuple(src)], out=out[tuple(dst)])
        if outside and off != 0:  # the part of the support that leaves the array
            edge = [slice(None)] * flags.ndim
            edge[axis] = slice(size - off, size) if off > 0 else slice(0, -off)
            out[tuple(edge)] = True
    return out


def _frame(size: int) -> np.ndarray:
    """Pixels near both ends of an axis, whose prefilter depends on the boundary rule."""
    frame = np.zeros(size, dtype=bool)
    frame[:_EDGE] = True
    frame[-_EDGE:] = True
    return frame


@numba.njit(cache=True, nogil=True)
def _count_missing(image, mask, bits):  # pragma: no cover - compiled
    """Count the pixels that are non-finite or have one of ``bits`` set in ``mask``."""
    count = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            if not math.isfinite(image[i, j]) or (mask[i, j] & bits) != 0:
                count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _first_usable(image, mask, bits):  # pragma: no cover - compiled
    """Whether any pixel is finite and has none of ``bits`` set (stops at the first)."""
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            if math.isfinite(image[i, j]) and (mask[i, j] & bits) == 0:
                return True
    return False


def has_usable_pixel(image: np.ndarray, mask: np.ndarray, bits: int) -> bool:
    """Whether ``image`` has a finite pixel whose ``mask`` has none of ``bits`` set.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-d image.
    mask : `numpy.ndarray`
        Mask bits of the same shape.
    bits : `int`
        Bits that make a pixel unusable.

    Returns
    -------
    usable : `bool`
    """
    return bool(_first_usable(image, mask, np.uint32(bits)))


def shift_and_sum(
    images: Sequence[np.ndarray],
    shifts: Sequence[tuple[float, float]],
    bad: Sequence[np.ndarray | None] | None = None,
    *,
    masks: Sequence[np.ndarray] | None = None,
    bad_bits: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of images, each shifted by its own sub-pixel offset (cubic spline).

    Equals ``sum(shift_image(image, dy, dx)[0])`` up to rounding, with one
    spline prefilter for all images instead of one each.

    Parameters
    ----------
    images : `list` [`numpy.ndarray`]
        2-d images of one shape; NaN pixels count as bad.
    shifts : `list` [`tuple` [`float`, `float`]]
        ``(dy, dx)`` of each image: the content at array position ``(i, j)``
        moves to ``(i + dy, j + dx)``.
    bad : `list` [`numpy.ndarray` or `None`], optional
        Extra pixels of each image to treat as missing.
    masks : `list` [`numpy.ndarray`], optional
        Mask planes of the images: pixels with any of ``bad_bits`` set are
        missing too (a cheaper spelling of ``bad`` when they are rare).
    bad_bits : `int`, optional
        Mask bits marking missing pixels.

    Returns
    -------
    total : `numpy.ndarray` (float32)
        Sum of the shifted images; 0 where ``total_bad`` is set.
    total_bad : `numpy.ndarray` of `bool`
        Output pixels whose interpolation support (the four taps along each
        axis) touched a missing input pixel of any image, or left the image;
        beyond that support the ringing of the filled values is negligible.

    Raises
    ------
    tasks.dcr.errors.DcrError
        If no image is given, shifts and images differ in number, or shapes differ.
    """
    images = [np.asarray(image) for image in images]
    if not images or len(shifts) != len(images):
        raise DcrError("shift_and_sum needs one (dy, dx) per image, and at least one image")
    shape = images[0].shape
    bad = list(bad) if bad is not None else [None] * len(images)
    if masks is None:
        masks = [np.zeros(shape, dtype=np.uint32)] * len(images)
        bad_bits = 0
    total = np.zeros(shape, dtype=np.float32)
    total_bad = np.zeros(shape, dtype=bool)
    frame_rows = np.zeros(shape[0], dtype=bool)
    frame_cols = np.zeros(shape[1], dtype=bool)
    bits = np.uint32(bad_bits)
    for image, (dy, dx), extra, mask in zip(images, shifts, bad, masks, strict=True):
        if image.shape != shape or mask.shape != shape:
            raise DcrError(f"image or mask shape differs from {shape}")
        any_missing = extra is not None and bool(extra.any())
        any_missing |= _count_missing(image, mask, bits) > 0
        if any_missing:
            missing = ~np.isfinite(image) | ((mask & bits) != 0)
            if extra is not None:
                missing |= extra
            filled = fill_bad_pixels(image, missing)
        else:
            filled = np.asarray(image, dtype=np.float32)
        _shift_taps(filled, dy, dx, total)
        # the border pixels' support leaves the image; the frame is separable,
        # so its shifted footprint is computed on two 1-d arrays
        frame_rows |= _shift_support(_frame(shape[0]), dy, 0, True)
        frame_cols |= _shift_support(_frame(shape[1]), dx, 0, True)
        if any_missing:
            total_bad |= _shift_support(_shift_support(missing, dy, 0, True), dx, 1, True)
    _prefilter(total)
    total_bad |= frame_rows[:, None] | frame_cols[None, :]
    total[total_bad] = 0.0
    return total, total_bad


def shift_image(
    image: np.ndarray,
    dy: float,
    dx: float,
    bad: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift an image by a sub-pixel offset with a cubic spline (zero fill outside).

    The content at array position ``(i, j)`` moves to ``(i + dy, j + dx)``.
    This equals ``scipy.ndimage.shift(image, (dy, dx), order=3)`` away from the
    edges, computed separably (see the module docstring).

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
        Shifted image; 0 where ``shifted_bad`` is set.
    shifted_bad : `numpy.ndarray` of `bool`
        As ``total_bad`` of `shift_and_sum`.
    """
    return shift_and_sum([image], [(dy, dx)], [bad])
