"""Vectorised circular-aperture photometry.

Pixel weights are the fraction of each pixel inside the circle, estimated by
sub-sampling every pixel on an ``s x s`` grid.  All sources are handled at
once on stamps gathered with `tasks.forcedphot.psf_flux.gather_stamps`; the
only Python loop is over the ``s * s`` sub-pixel offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.forcedphot.psf_flux import central_pixel, gather_stamps

__all__ = ["ApertureResult", "aperture_flux", "aperture_weights"]


@dataclass
class ApertureResult:
    """Aperture fluxes (instrumental) and flags.

    Attributes
    ----------
    flux, flux_err : `numpy.ndarray`
        Sum of the pixels in the aperture and its 1-sigma error.
    flag_edge : `numpy.ndarray` of bool
        The aperture extends off the image (flux is NaN).
    flag_bad : `numpy.ndarray` of bool
        A masked (bad) or non-finite pixel lies in the aperture (flux is NaN).
    """

    flux: np.ndarray
    flux_err: np.ndarray
    flag_edge: np.ndarray
    flag_bad: np.ndarray


def aperture_weights(
    dx: np.ndarray, dy: np.ndarray, radius: float, half: int, subsample: int = 8
) -> np.ndarray:
    """Fraction of each stamp pixel inside a circle centred at ``(dx, dy)``.

    Parameters
    ----------
    dx, dy : `numpy.ndarray`
        Offsets of the circle centre from the central pixel of each stamp.
    radius : `float`
        Aperture radius in pixels.
    half : `int`
        Stamp half-width.
    subsample : `int`, optional
        Sub-samples per pixel along each axis.

    Returns
    -------
    weights : `numpy.ndarray`, shape ``(n, 2*half+1, 2*half+1)``
    """
    dx = np.atleast_1d(np.asarray(dx, dtype=np.float64))
    dy = np.atleast_1d(np.asarray(dy, dtype=np.float64))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    sub = (np.arange(subsample) + 0.5) / subsample - 0.5
    u0 = offsets[None, None, :] - dx[:, None, None]
    v0 = offsets[None, :, None] - dy[:, None, None]
    r2 = radius * radius
    weights = np.zeros((dx.size, offsets.size, offsets.size))
    for sv in sub:
        dv2 = (v0 + sv) ** 2
        for su in sub:
            weights += ((u0 + su) ** 2 + dv2) <= r2
    return weights / subsample**2


def aperture_flux(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None,
    origin: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    bad_mask: int = 0,
    subsample: int = 8,
) -> ApertureResult:
    """Measure circular-aperture fluxes at fixed positions.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        Image and variance planes.
    mask : `numpy.ndarray` or `None`
        Integer mask plane.
    origin : `tuple` [`int`, `int`]
        Parent ``(x0, y0)`` of the arrays.
    x, y : `numpy.ndarray`
        Parent positions of the aperture centres.
    radius : `float`
        Aperture radius (pixels).
    bad_mask : `int`, optional
        Mask bits that make a pixel unusable.
    subsample : `int`, optional
        Sub-samples per pixel along each axis for the pixel fractions.

    Returns
    -------
    result : `ApertureResult`
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    finite = np.isfinite(x) & np.isfinite(y)
    cx = central_pixel(x)
    cy = central_pixel(y)
    half = int(np.ceil(radius)) + 1
    weights = aperture_weights(
        np.where(finite, x - cx, 0.0), np.where(finite, y - cy, 0.0), radius, half, subsample
    )
    data, inside = gather_stamps(image, origin, cx, cy, half)
    var, _ = gather_stamps(variance, origin, cx, cy, half)
    covered = weights > 0
    flag_edge = (covered & ~inside).any(axis=(1, 2)) | ~finite
    bad = ~np.isfinite(data) | ~np.isfinite(var)
    if mask is not None and bad_mask:
        msk, _ = gather_stamps(mask, origin, cx, cy, half)
        bad |= (msk & bad_mask) != 0
    flag_bad = (covered & inside & bad).any(axis=(1, 2))
    data = np.where(bad, 0.0, data).astype(np.float64, copy=False)
    var = np.where(bad, 0.0, var).astype(np.float64, copy=False)
    flux = np.einsum("nij,nij->n", weights, data)
    flux_err = np.sqrt(np.einsum("nij,nij,nij->n", weights, weights, var))
    failed = flag_edge | flag_bad
    flux[failed] = np.nan
    flux_err[failed] = np.nan
    return ApertureResult(flux=flux, flux_err=flux_err, flag_edge=flag_edge, flag_bad=flag_bad)
