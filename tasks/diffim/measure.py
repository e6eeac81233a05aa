"""PSF-fit fluxes and pixel flags at given positions, on numpy arrays.

The PSF flux at a fixed position is the linear least-squares amplitude of
the PSF model ``P`` (sum 1, drawn at the sub-pixel position) over the good
pixels ``R`` of its stamp: ``F = sum(P D) / sum(P**2)`` with
``sigma_F = sqrt(sum(P**2 V)) / sum(P**2)`` (an unweighted fit, which is the
optimal one when the variance is flat over the stamp, and unbiased when it
is not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.diffim.pixel_loops import add_stamps

__all__ = [
    "PsfFluxes",
    "extract_stamps",
    "mask_all_near",
    "mask_bits_near",
    "psf_fluxes",
    "psf_model_stamps",
    "subtract_psf_models",
]

PsfImages = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(x, y) -> (n, k, k)`` PSF images centred at the sub-pixel offsets of (x, y)."""


@dataclass
class PsfFluxes:
    """PSF-fit results for ``n`` positions.

    Attributes
    ----------
    flux, flux_err : `numpy.ndarray`
        Amplitude in image units and its error (NaN where no good pixel).
    ndata : `numpy.ndarray` of int
        Number of pixels used.
    chi2 : `numpy.ndarray`
        Chi-square of the fit over the used pixels.
    flag_edge : `numpy.ndarray` of bool
        The stamp leaves the image or touches unusable pixels.
    flag_no_good : `numpy.ndarray` of bool
        Not enough usable pixels near the centre to fit.
    """

    flux: np.ndarray
    flux_err: np.ndarray
    ndata: np.ndarray
    chi2: np.ndarray
    flag_edge: np.ndarray
    flag_no_good: np.ndarray


def extract_stamps(
    array: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int, fill: float = np.nan
) -> np.ndarray:
    """Return ``(n, size, size)`` stamps centred on integer pixels ``(cx, cy)``.

    Pixels outside the array take ``fill`` (which must fit the array's dtype).
    """
    half = size // 2
    height, width = array.shape
    offsets = np.arange(-half, half + 1)
    rows = cy[:, None] + offsets[None, :]
    cols = cx[:, None] + offsets[None, :]
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    stamps = array[
        np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]
    ]
    inside = row_ok[:, :, None] & col_ok[:, None, :]
    return np.where(inside, stamps, np.asarray(fill).astype(stamps.dtype))


def psf_fluxes(
    image: np.ndarray,
    variance: np.ndarray,
    bad: np.ndarray,
    psf_images: PsfImages,
    x: np.ndarray,
    y: np.ndarray,
    *,
    min_weight: float = 0.5,
) -> PsfFluxes:
    """Fit the PSF amplitude at fixed positions (array coordinates).

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        Image and variance planes.
    bad : `numpy.ndarray` of bool
        Unusable pixels (masked, NO_DATA); non-finite pixels are unusable too.
    psf_images : callable
        ``(x, y) -> (n, k, k)`` PSF images for array positions (x, y), the
        central pixel at ``(floor(x + 0.5), floor(y + 0.5))``.
    x, y : `numpy.ndarray`
        Array positions (column, row).
    min_weight : `float`, optional
        Minimum fraction of ``sum(P**2)`` that the usable pixels must hold;
        below it the fit is flagged ``flag_no_good`` and returns NaN.

    Returns
    -------
    result : `PsfFluxes`
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    n = x.size
    if n == 0:
        empty = np.zeros(0)
        return PsfFluxes(
            empty, empty, np.zeros(0, int), empty, np.zeros(0, bool), np.zeros(0, bool)
        )
    psf = psf_images(x, y)
    k = psf.shape[-1]
    cx = np.floor(x + 0.5).astype(np.int64)
    cy = np.floor(y + 0.5).astype(np.int64)
    data = extract_stamps(image, cx, cy, k).astype(np.float64)
    var = extract_stamps(variance, cx, cy, k).astype(np.float64)
    usable = extract_stamps(~bad, cx, cy, k, fill=False).astype(bool)
    usable &= np.isfinite(data) & np.isfinite(var) & (var > 0)
    p = np.where(usable, psf, 0.0)
    d = np.where(usable, data, 0.0)
    v = np.where(usable, var, 0.0)
    sum_p2 = np.einsum("nij,nij->n", p, p)
    total_p2 = np.einsum("nij,nij->n", psf, psf)
    no_good = sum_p2 < min_weight * total_p2
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.einsum("nij,nij->n", p, d) / sum_p2
        flux_err = np.sqrt(np.einsum("nij,nij->n", p * p, v)) / sum_p2
        resid = np.where(usable, d - flux[:, None, None] * psf, 0.0)
        chi2 = np.einsum("nij,nij->n", resid * resid, np.where(usable, 1.0 / v, 0.0))
    flux[no_good] = np.nan
    flux_err[no_good] = np.nan
    chi2[no_good] = np.nan
    ndata = usable.sum(axis=(1, 2))
    flag_edge = ndata < k * k
    return PsfFluxes(flux, flux_err, ndata, chi2, flag_edge, no_good)


def mask_bits_near(
    mask: np.ndarray, cx: np.ndarray, cy: np.ndarray, half: int | np.ndarray
) -> np.ndarray:
    """OR of the mask bits in the square of half-width ``half`` around each pixel.

    Parameters
    ----------
    mask : `numpy.ndarray` of uint32
        Mask plane.
    cx, cy : `numpy.ndarray` of int
        Centre pixels (array coordinates).
    half : `int` or `numpy.ndarray`
        Half-width of the square (1 for the 3x3 centre region); per source if an array.

    Returns
    -------
    bits : `numpy.ndarray` of uint32
    """
    if np.ndim(half) == 0:  # one square size: gathered at once
        stamps, inside = _square_stamps(mask, cx, cy, int(half))
        return np.bitwise_or.reduce(np.where(inside, stamps, 0), axis=(1, 2)).astype(mask.dtype)
    half_arr = np.asarray(half, dtype=np.int64)
    out = np.zeros(cx.shape, dtype=mask.dtype)
    height, width = mask.shape
    for i, (x0, y0, h) in enumerate(zip(cx, cy, half_arr, strict=True)):
        sub = mask[
            max(y0 - h, 0) : min(y0 + h + 1, height), max(x0 - h, 0) : min(x0 + h + 1, width)
        ]
        if sub.size:
            out[i] = np.bitwise_or.reduce(sub, axis=None)
    return out


def _square_stamps(
    mask: np.ndarray, cx: np.ndarray, cy: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mask values in the square of half-width ``half`` around each pixel, and which are inside."""
    cx = np.asarray(cx, dtype=np.int64)
    cy = np.asarray(cy, dtype=np.int64)
    height, width = mask.shape
    offsets = np.arange(-half, half + 1)
    rows = cy[:, None] + offsets[None, :]
    cols = cx[:, None] + offsets[None, :]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
        :, None, :
    ]
    stamps = mask[np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]]
    return stamps, inside


def mask_all_near(mask: np.ndarray, cx: np.ndarray, cy: np.ndarray, planes: int) -> np.ndarray:
    """Whether every pixel of the 3 x 3 square around each pixel has one of ``planes``.

    Pixels outside the image do not count (a centre on the corner is judged
    on its 4 pixels inside).

    Parameters
    ----------
    mask : `numpy.ndarray` of uint32
        Mask plane.
    cx, cy : `numpy.ndarray` of int
        Centre pixels (array coordinates).
    planes : `int`
        Mask bits.

    Returns
    -------
    flags : `numpy.ndarray` of bool
    """
    stamps, inside = _square_stamps(mask, cx, cy, 1)
    flagged = ((stamps & planes) != 0) | ~inside
    return flagged.all(axis=(1, 2)) & inside.any(axis=(1, 2))


def psf_model_stamps(
    psf_images: PsfImages, x: np.ndarray, y: np.ndarray, flux: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSF models of sources as stamps and their corners (array coordinates).

    Sources with a non-finite flux or position are left out.

    Returns
    -------
    stamps : `numpy.ndarray`
        ``(n, k, k)`` models, ``flux`` times the PSF image at ``(x, y)``.
    x0, y0 : `numpy.ndarray` of int
        Array position of each stamp's first column and row.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    flux = np.asarray(flux, dtype=float)
    ok = np.isfinite(flux) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return np.zeros((0, 1, 1)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, y, flux = x[ok], y[ok], flux[ok]
    stamps = psf_images(x, y) * flux[:, None, None]
    half = stamps.shape[-1] // 2
    x0 = np.floor(x + 0.5).astype(np.int64) - half
    y0 = np.floor(y + 0.5).astype(np.int64) - half
    return stamps, x0, y0


def subtract_psf_models(
    image: np.ndarray, psf_images: PsfImages, x: np.ndarray, y: np.ndarray, flux: np.ndarray
) -> np.ndarray:
    """Return ``image`` minus PSF models of the given sources (array coordinates).

    Sources with a non-finite flux are skipped.  The result is a float32 copy;
    only the pixels under the models are visited.
    """
    out = np.array(image, dtype=np.float32)
    stamps, x0, y0 = psf_model_stamps(psf_images, x, y, flux)
    if len(stamps):
        add_stamps(out, stamps.astype(np.float32), x0, y0, np.float32(-1.0))
    return out
