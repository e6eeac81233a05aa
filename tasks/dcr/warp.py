"""Resample an exposure onto another WCS and pixel box.

The pixel mapping destination → sky → source is smooth, so we evaluate the
two astropy WCS transforms exactly on a coarse grid of destination pixels
only, interpolate it bilinearly to every pixel, and check the
interpolation against the exact mapping at the cell centres (the grid is
refined until the error is below ``tolerance`` pixels).  This is the
"interpolation length" trick of the LSST warper; it makes the WCS cost
negligible, where transforming every pixel of a 4k x 4k detector through
astropy takes seconds (see ``bench/dcr``).

The image is then sampled at the mapped positions with a cubic B-spline
(``scipy.ndimage.map_coordinates``, order 3: an interpolating kernel with a
better pass band than Lanczos-3 at the same support), only at destination
pixels that fall inside the source; the variance and the mask take the
nearest source pixel (the variance is smooth on a pixel scale and must stay
positive).  Source pixels without data are filled before the spline
and every destination pixel whose interpolation support touches them, or
that falls outside the source, is ``NO_DATA`` (image and variance NaN).
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from tasks.dcr.shift import fill_bad_pixels
from tasks.images import Box2I, Exposure, MaskPlane

__all__ = ["pixel_mapping", "warp_exposure"]

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


def pixel_mapping(
    dest_wcs: WCS,
    dest_bbox: Box2I,
    src_wcs: WCS,
    *,
    spacing: int = 64,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Source parent pixel positions of every destination pixel.

    The exact mapping is computed on a grid of destination pixels and
    interpolated bilinearly (as two small matrix products); the grid is
    refined until the interpolation error at the cell centres is below
    ``tolerance``.

    Parameters
    ----------
    dest_wcs, src_wcs : `astropy.wcs.WCS`
        WCSs in parent pixel coordinates.
    dest_bbox : `Box2I`
        Destination pixels.
    spacing : `int`, optional
        Initial spacing (pixels) of the grid on which the exact mapping is computed.
    tolerance : `float`, optional
        Largest allowed interpolation error (pixels), checked at cell centres.

    Returns
    -------
    sx, sy : `numpy.ndarray`
        Arrays of shape ``dest_bbox.shape``: source parent ``x`` and ``y``.
    """
    spacing = max(int(spacing), 2)
    while True:
        nx = max(int(np.ceil((dest_bbox.width - 1) / spacing)), 1) + 1
        ny = max(int(np.ceil((dest_bbox.height - 1) / spacing)), 1) + 1
        gx = np.linspace(dest_bbox.x0, dest_bbox.x1, nx)
        gy = np.linspace(dest_bbox.y0, dest_bbox.y1, ny)
        xx, yy = np.meshgrid(gx, gy)
        sx, sy = (a.reshape(ny, nx) for a in _exact(dest_wcs, src_wcs, xx.ravel(), yy.ravel()))
        cx = 0.5 * (gx[:-1] + gx[1:])
        cy = 0.5 * (gy[:-1] + gy[1:])
        cxx, cyy = np.meshgrid(cx, cy)
        ex, ey = _exact(dest_wcs, src_wcs, cxx.ravel(), cyy.ravel())
        wy, wx = _linear_weights(cy, gy), _linear_weights(cx, gx)
        err = np.hypot((wy @ sx @ wx.T).ravel() - ex, (wy @ sy @ wx.T).ravel() - ey).max()
        if err <= tolerance or spacing <= 4:
            break
        spacing //= 2
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
    """Resample ``source`` onto ``dest_wcs`` / ``dest_bbox``.

    Parameters
    ----------
    source : `tasks.images.Exposure`
        Image to resample (NaN or ``NO_DATA``/``BAD`` pixels are treated as missing).
    dest_wcs : `astropy.wcs.WCS`
        Destination WCS (parent pixel coordinates).
    dest_bbox : `Box2I`
        Destination pixel box.
    spacing, tolerance : optional
        See `pixel_mapping`.

    Returns
    -------
    warped : `tasks.images.Exposure`
        float32 planes on ``dest_bbox``; uncovered pixels are ``NO_DATA`` with
        NaN image and variance.  PSF, calibration and band are carried over
        (the PSF in the source's orientation, exact for circular PSFs).
    """
    image = np.full(dest_bbox.shape, np.nan, dtype=np.float32)
    variance = np.full(dest_bbox.shape, np.nan, dtype=np.float32)
    mask = np.full(dest_bbox.shape, np.uint32(MaskPlane.NO_DATA), dtype=np.uint32)
    out = Exposure(
        image,
        mask,
        variance,
        dest_wcs,
        dest_bbox,
        psf=source.psf,
        photo_calib=source.photo_calib,
        band=source.band,
    )
    sx, sy = pixel_mapping(dest_wcs, dest_bbox, source.wcs, spacing=spacing, tolerance=tolerance)
    inside = np.flatnonzero(source.bbox.contains(sx, sy))
    if inside.size == 0:
        return out
    # array coordinates of the covered destination pixels in the source
    ax = sx.ravel()[inside] - source.bbox.x0
    ay = sy.ravel()[inside] - source.bbox.y0
    del sx, sy
    # the source rows/columns needed (+ the spline support)
    box = Box2I.from_corners(
        int(np.floor(ax.min())) - 3,
        int(np.floor(ay.min())) - 3,
        int(np.ceil(ax.max())) + 3,
        int(np.ceil(ay.max())) + 3,
    ).intersection(Box2I(0, 0, source.bbox.width, source.bbox.height))
    rows = slice(box.y0, box.y0 + box.height)
    cols = slice(box.x0, box.x0 + box.width)
    ax -= box.x0
    ay -= box.y0
    src_img = source.image[rows, cols]
    src_var = source.variance[rows, cols]
    src_mask = source.mask[rows, cols]
    missing = ~np.isfinite(src_img) | ~np.isfinite(src_var) | ((src_mask & _UNUSABLE) != 0)
    any_missing = bool(missing.any())
    filled = fill_bad_pixels(src_img, missing) if any_missing else src_img
    coeff = ndimage.spline_filter(filled, order=3, output=np.float32, mode="mirror")
    coords = np.array([ay, ax], dtype=np.float32)
    warped_img = ndimage.map_coordinates(
        coeff, coords, order=3, mode="mirror", prefilter=False, output=np.float32
    )
    # nearest source pixel (floor(v + 0.5)) for the variance and the mask: both
    # are smooth or categorical on the scale of a pixel
    ix = np.clip(np.floor(ax + 0.5).astype(np.intp), 0, box.width - 1)
    iy = np.clip(np.floor(ay + 0.5).astype(np.intp), 0, box.height - 1)
    flat = iy * box.width + ix
    warped_var = np.asarray(src_var, dtype=np.float32).ravel()[flat]
    warped_mask = src_mask.ravel()[flat] & ~np.uint32(_UNUSABLE)
    if any_missing:
        # the cubic support (4x4) of a position lies within 2 pixels of its nearest pixel
        touched = ndimage.maximum_filter(missing, size=5).ravel()[flat]
        warped_img[touched] = np.nan
        warped_var[touched] = np.nan
        warped_mask[touched] |= np.uint32(MaskPlane.NO_DATA)
    image.ravel()[inside] = warped_img
    variance.ravel()[inside] = warped_var
    mask.ravel()[inside] = warped_mask
    return out
