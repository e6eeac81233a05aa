"""Resample an exposure onto another WCS and pixel box.

The pixel mapping destination → sky → source is smooth, so we evaluate the
two astropy WCS transforms exactly on a coarse grid of destination pixels
only and interpolate it bilinearly to every pixel; the interpolation is
checked against the exact mapping at the cell centres and the grid refined
until the error is below ``tolerance`` pixels.  This is the
"interpolation length" trick of the LSST warper; it makes the WCS cost
negligible, where transforming every pixel of a 4k x 4k detector through
astropy takes seconds (see ``bench/dcr``).

The planes are then resampled by `tasks.dcr.lanczos.warp_planes`: Lanczos-3
for the image and the variance, the OR of the bilinear support for the
mask, and ``NO_DATA`` wherever the kernel would touch a missing source
pixel or leave the source.  No general-purpose resampling library offers a
Lanczos kernel with this bad-pixel rule (``reproject`` and
``scipy.ndimage`` stop at splines; OpenCV has only Lanczos-4 and no masks),
and ``reproject_interp``'s bicubic was 11x slower than our previous spline
warper in the same run (``bench/dcr/bench_template.py``), so the loop is
compiled with numba.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from tasks.dcr.lanczos import warp_planes
from tasks.images import Box2I, Exposure, MaskPlane

__all__ = ["mapping_grid", "pixel_mapping", "warp_exposure"]

_UNUSABLE = MaskPlane.NO_DATA | MaskPlane.BAD


def _exact(dest_wcs: WCS, src_wcs: WCS, x: np.ndarray, y: np.ndarray):
    ra, dec = dest_wcs.all_pix2world(x, y, 0)
    if src_wcs.sip is not None:
        return src_wcs.all_world2pix(ra, dec, 0)
    return src_wcs.wcs_world2pix(ra, dec, 0)


def _linear_weights(points: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Dense ``(len(points), len(grid))`` matrix of linear interpolation weights."""
    j = np.clip(np.searchsorted(grid, points, side="right") - 1, 0, len(grid) - 2)
    t = (points - grid[j]) / (grid[j + 1] - grid[j])
    weights = np.zeros((len(points), len(grid)))
    rows = np.arange(len(points))
    weights[rows, j] = 1.0 - t
    weights[rows, j + 1] = t
    return weights


def mapping_grid(
    dest_wcs: WCS,
    dest_bbox: Box2I,
    src_wcs: WCS,
    *,
    spacing: int = 64,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact source positions on a regular grid of destination pixels.

    The grid is refined (its spacing halved, down to 4 pixels) until
    bilinear interpolation between grid points reproduces the exact
    mapping at the cell centres within ``tolerance``.

    Parameters
    ----------
    dest_wcs, src_wcs : `astropy.wcs.WCS`
        WCSs in parent pixel coordinates.
    dest_bbox : `Box2I`
        Destination pixels.
    spacing : `int`, optional
        Initial spacing (pixels) of the grid.
    tolerance : `float`, optional
        Largest allowed interpolation error (pixels), checked at cell centres.

    Returns
    -------
    gx, gy : `numpy.ndarray`
        Regularly spaced destination parent ``x`` (``nx``) and ``y`` (``ny``),
        from the first to the last pixel of ``dest_bbox``.
    sx, sy : `numpy.ndarray`
        ``(ny, nx)`` source parent positions of the grid points.
    """
    spacing = max(int(spacing), 2)
    while True:
        nx = max(int(np.ceil((dest_bbox.width - 1) / spacing)), 1) + 1
        ny = max(int(np.ceil((dest_bbox.height - 1) / spacing)), 1) + 1
        gx = np.linspace(dest_bbox.x0, dest_bbox.x1 + (dest_bbox.width == 1), nx)
        gy = np.linspace(dest_bbox.y0, dest_bbox.y1 + (dest_bbox.height == 1), ny)
        xx, yy = np.meshgrid(gx, gy)
        sx, sy = (a.reshape(ny, nx) for a in _exact(dest_wcs, src_wcs, xx.ravel(), yy.ravel()))
        cx = 0.5 * (gx[:-1] + gx[1:])
        cy = 0.5 * (gy[:-1] + gy[1:])
        cxx, cyy = np.meshgrid(cx, cy)
        ex, ey = _exact(dest_wcs, src_wcs, cxx.ravel(), cyy.ravel())
        wy, wx = _linear_weights(cy, gy), _linear_weights(cx, gx)
        err = np.hypot((wy @ sx @ wx.T).ravel() - ex, (wy @ sy @ wx.T).ravel() - ey).max()
        if err <= tolerance or spacing <= 4:
            return gx, gy, sx, sy
        spacing //= 2


def pixel_mapping(
    dest_wcs: WCS,
    dest_bbox: Box2I,
    src_wcs: WCS,
    *,
    spacing: int = 64,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Source parent pixel positions of every destination pixel.

    The dense version of `mapping_grid` (the grid interpolated bilinearly, as
    two small matrix products), for checks and small images; the warper
    interpolates the grid on the fly instead.

    Parameters
    ----------
    dest_wcs, src_wcs : `astropy.wcs.WCS`
        WCSs in parent pixel coordinates.
    dest_bbox : `Box2I`
        Destination pixels.
    spacing, tolerance : optional
        See `mapping_grid`.

    Returns
    -------
    sx, sy : `numpy.ndarray`
        Arrays of shape ``dest_bbox.shape``: source parent ``x`` and ``y``.
    """
    gx, gy, sx, sy = mapping_grid(
        dest_wcs, dest_bbox, src_wcs, spacing=spacing, tolerance=tolerance
    )
    wy = _linear_weights(np.arange(dest_bbox.y0, dest_bbox.y1 + 1, dtype=float), gy)
    wx = _linear_weights(np.arange(dest_bbox.x0, dest_bbox.x1 + 1, dtype=float), gx)
    return wy @ sx @ wx.T, wy @ sy @ wx.T


def warp_exposure(
    source: Exposure,
    dest_wcs: WCS,
    dest_bbox: Box2I,
    *,
    spacing: int = 64,
    tolerance: float = 0.01,
) -> Exposure:
    """Resample ``source`` onto ``dest_wcs`` / ``dest_bbox`` (Lanczos-3).

    Parameters
    ----------
    source : `tasks.images.Exposure`
        Image to resample (NaN or ``NO_DATA``/``BAD`` pixels are treated as missing).
    dest_wcs : `astropy.wcs.WCS`
        Destination WCS (parent pixel coordinates).
    dest_bbox : `Box2I`
        Destination pixel box.
    spacing, tolerance : optional
        See `mapping_grid`.

    Returns
    -------
    warped : `tasks.images.Exposure`
        float32 planes on ``dest_bbox``; pixels that are uncovered, or whose
        Lanczos support (6 x 6 source pixels) touches a missing pixel or
        leaves the source, are ``NO_DATA`` with NaN image and variance.
        PSF, calibration and band are carried over (the PSF in the source's
        orientation, exact for circular PSFs).
    """
    gx, gy, sx, sy = mapping_grid(
        dest_wcs, dest_bbox, source.wcs, spacing=spacing, tolerance=tolerance
    )
    image, variance, mask = warp_planes(
        source.image,
        source.variance,
        source.mask,
        (gx, gy, sx - source.bbox.x0, sy - source.bbox.y0),
        (dest_bbox.x0, dest_bbox.y0),
        dest_bbox.shape,
        unusable_bits=int(_UNUSABLE),
        no_data_bit=int(MaskPlane.NO_DATA),
    )
    return Exposure(
        image,
        mask,
        variance,
        dest_wcs,
        dest_bbox,
        psf=source.psf,
        photo_calib=source.photo_calib,
        band=source.band,
    )
