"""Resample an exposure onto another WCS and pixel box.

The pixel mapping destination → sky → source is smooth, so we evaluate the
two astropy WCS transforms exactly on a coarse grid of destination pixels
only, interpolate it to every pixel with a bicubic spline, and check the
interpolation against the exact mapping at the cell centres (the grid is
refined until the error is below ``tolerance`` pixels).  This is the
"interpolation length" trick of the LSST warper; it makes the WCS cost
negligible, where transforming every pixel of a 4k x 4k detector through
astropy takes seconds (see ``bench/dcr``).

The image is then sampled at the mapped positions with a cubic B-spline
(``scipy.ndimage.map_coordinates``, order 3: an interpolating kernel with a
better pass band than Lanczos-3 at the same support), the variance with
bilinear interpolation (it is smooth and must stay positive), the mask with
the nearest pixel.  Source pixels without data are filled before the spline
and every destination pixel whose interpolation support touches them, or
that falls outside the source, is ``NO_DATA`` (image and variance NaN).
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage
from scipy.interpolate import RectBivariateSpline

from tasks.dcr.shift import fill_bad_pixels
from tasks.images import Box2I, Exposure, MaskPlane

__all__ = ["pixel_mapping", "warp_exposure"]

_UNUSABLE = MaskPlane.NO_DATA | MaskPlane.BAD


def _exact(dest_wcs: WCS, src_wcs: WCS, x: np.ndarray, y: np.ndarray):
    ra, dec = dest_wcs.all_pix2world(x, y, 0)
    if src_wcs.sip is not None:
        return src_wcs.all_world2pix(ra, dec, 0)
    return src_wcs.wcs_world2pix(ra, dec, 0)


def pixel_mapping(
    dest_wcs: WCS,
    dest_bbox: Box2I,
    src_wcs: WCS,
    *,
    spacing: int = 64,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Source parent pixel positions of every destination pixel.

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
        nx = max(int(np.ceil((dest_bbox.width - 1) / spacing)), 3) + 1
        ny = max(int(np.ceil((dest_bbox.height - 1) / spacing)), 3) + 1
        gx = np.linspace(dest_bbox.x0, dest_bbox.x1, nx)
        gy = np.linspace(dest_bbox.y0, dest_bbox.y1, ny)
        xx, yy = np.meshgrid(gx, gy)
        sx, sy = _exact(dest_wcs, src_wcs, xx.ravel(), yy.ravel())
        spline_x = RectBivariateSpline(gy, gx, sx.reshape(ny, nx), kx=3, ky=3)
        spline_y = RectBivariateSpline(gy, gx, sy.reshape(ny, nx), kx=3, ky=3)
        cx = 0.5 * (gx[:-1] + gx[1:])
        cy = 0.5 * (gy[:-1] + gy[1:])
        cxx, cyy = np.meshgrid(cx, cy)
        ex, ey = _exact(dest_wcs, src_wcs, cxx.ravel(), cyy.ravel())
        err = np.hypot(spline_x(cy, cx).ravel() - ex, spline_y(cy, cx).ravel() - ey).max()
        if err <= tolerance or spacing <= 4:
            break
        spacing //= 2
    ys = np.arange(dest_bbox.y0, dest_bbox.y1 + 1, dtype=float)
    xs = np.arange(dest_bbox.x0, dest_bbox.x1 + 1, dtype=float)
    return spline_x(ys, xs), spline_y(ys, xs)


def _covered_box(
    sx: np.ndarray, sy: np.ndarray, src_bbox: Box2I, margin: int
) -> tuple[Box2I | None, tuple[slice, slice] | None]:
    """Source sub-box needed and destination rows/cols that map inside the source."""
    inside = src_bbox.contains(sx, sy)
    if not np.any(inside):
        return None, None
    rows = np.nonzero(inside.any(axis=1))[0]
    cols = np.nonzero(inside.any(axis=0))[0]
    dest_slices = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    x0 = int(np.floor(sx[dest_slices][inside[dest_slices]].min())) - margin
    x1 = int(np.ceil(sx[dest_slices][inside[dest_slices]].max())) + margin
    y0 = int(np.floor(sy[dest_slices][inside[dest_slices]].min())) - margin
    y1 = int(np.ceil(sy[dest_slices][inside[dest_slices]].max())) + margin
    box = Box2I.from_corners(x0, y0, x1, y1).intersection(src_bbox)
    return box, dest_slices


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
    box, dest = _covered_box(sx, sy, source.bbox, margin=4)
    if box is None:
        return out
    sub = source.bbox.slices(box)
    src_img = source.image[sub]
    src_var = source.variance[sub]
    src_mask = source.mask[sub]
    missing = ~np.isfinite(src_img) | ~np.isfinite(src_var) | ((src_mask & _UNUSABLE) != 0)
    # array coordinates inside the source sub-box
    ax = sx[dest] - box.x0
    ay = sy[dest] - box.y0
    coords = np.array([ay, ax])
    filled = fill_bad_pixels(src_img, missing)
    warped_img = ndimage.map_coordinates(filled, coords, order=3, mode="nearest")
    var_filled = np.where(missing, 0.0, src_var)
    warped_var = ndimage.map_coordinates(var_filled, coords, order=1, mode="nearest")
    # nearest source pixel for the mask (floor(v + 0.5) convention)
    ix = np.clip(np.floor(ax + 0.5).astype(np.int64), 0, box.width - 1)
    iy = np.clip(np.floor(ay + 0.5).astype(np.int64), 0, box.height - 1)
    warped_mask = src_mask[iy, ix] & ~np.uint32(_UNUSABLE)
    # pixels whose cubic support (4x4) touches missing data, or outside the source
    grown = ndimage.binary_dilation(missing, iterations=1)
    touched = ndimage.map_coordinates(
        grown.astype(np.float32), coords, order=1, mode="constant", cval=1.0
    )
    outside = ~source.bbox.contains(sx[dest], sy[dest])
    no_data = (touched > 1e-3) | outside
    warped_img[no_data] = np.nan
    warped_var[no_data] = np.nan
    warped_mask[no_data] |= np.uint32(MaskPlane.NO_DATA)
    image[dest] = warped_img
    variance[dest] = warped_var
    mask[dest] = warped_mask
    return out
