"""Calibrated image cutouts with a local linear WCS, for alerts.

The cutouts of one exposure are made by a `CutoutMaker` prepared once per
exposure (calibration factor, bad-pixel planes, vectorised pixel positions
and local WCS matrices for all sources), so packaging thousands of alerts
costs array slicing plus FITS rendering per cutout.

Conventions
-----------
- A cutout of size ``n`` around parent pixel position ``(x, y)`` starts at
  ``x0 = round(x) - n // 2`` (same in y): the source's pixel is the central
  one for odd sizes.
- A cutout that overlaps the edge of its exposure is *partial*: full size,
  pixels outside the exposure NaN and masked.  A source whose centre lies
  outside the exposure, or whose cutout holds no valid pixel, gets no
  cutout (`None`) and a logged reason.
- Pixel values are in nJy (the exposure's `PhotoCalib`), the variance in
  nJy², and the boolean mask is True for pixels with any bad plane.
- The local WCS is a TAN projection about the source's sky position whose
  CD matrix is the derivative of the exposure's WCS at the source
  (`local_transform_matrices`): the linear approximation Rubin's
  ``makeLocalTransformMatrix`` provides.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from tasks.alerts.fits_bytes import LinearWcs, ccd_fits_bytes

__all__ = [
    "BAD_PLANES",
    "CutoutMaker",
    "Cutout",
    "cutout_sizes",
    "gnomonic",
    "local_transform_matrices",
]

_log = logging.getLogger(__name__)

BAD_PLANES: tuple[str, ...] = ("BAD", "SAT", "CR", "NO_DATA", "SUSPECT")
"""Mask planes that make a cutout pixel invalid in the CCDData mask."""


def cutout_sizes(bbox_size: np.ndarray | int, min_size: int, max_size: int) -> np.ndarray:
    """Return cutout side lengths: ``bboxSize`` clamped to ``[min_size, max_size]``.

    Non-finite or missing sizes give ``min_size``.
    """
    size = np.asarray(bbox_size, dtype=np.float64)
    size = np.where(np.isfinite(size), size, min_size)
    return np.clip(np.ceil(size), min_size, max_size).astype(np.int64)


def gnomonic(
    ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project sky positions onto the tangent plane at ``(ra0, dec0)``.

    Returns the standard coordinates ``(xi, eta)`` in degrees, xi towards
    east, eta towards north: the intermediate world coordinates of a FITS
    TAN projection whose reference point is ``(ra0, dec0)``.
    """
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra, dec, ra0, dec0))
    dra = ra - ra0
    cos_dec, sin_dec = np.cos(dec), np.sin(dec)
    cos_dec0, sin_dec0 = np.cos(dec0), np.sin(dec0)
    denom = sin_dec * sin_dec0 + cos_dec * cos_dec0 * np.cos(dra)
    xi = cos_dec * np.sin(dra) / denom
    eta = (sin_dec * cos_dec0 - cos_dec * sin_dec0 * np.cos(dra)) / denom
    return np.degrees(xi), np.degrees(eta)


def local_transform_matrices(
    wcs: WCS,
    x: np.ndarray,
    y: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    step: float = 1.0,
) -> np.ndarray:
    """Local linear approximations of a WCS, vectorised.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        Maps parent pixel coordinates (0-based x, y) to ICRS degrees.
    x, y : `numpy.ndarray`
        Pixel positions where to approximate.
    ra, dec : `numpy.ndarray`
        Tangent points (degrees), normally the sky positions of ``(x, y)``.
    step : `float`, optional
        Half-width in pixels of the central differences.

    Returns
    -------
    cd : `numpy.ndarray`, shape ``(n, 2, 2)``
        Degrees of (east, north) standard coordinates per pixel step in
        (x, y): ``[[dxi/dx, dxi/dy], [deta/dx, deta/dy]]``.
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    n = len(x)
    px = np.concatenate([x + step, x - step, x, x])
    py = np.concatenate([y, y, y + step, y - step])
    sky_ra, sky_dec = wcs.all_pix2world(px, py, 0)
    xi, eta = gnomonic(sky_ra, sky_dec, np.tile(ra, 4), np.tile(dec, 4))
    xi = xi.reshape(4, n)
    eta = eta.reshape(4, n)
    cd = np.empty((n, 2, 2))
    cd[:, 0, 0] = (xi[0] - xi[1]) / (2 * step)
    cd[:, 0, 1] = (xi[2] - xi[3]) / (2 * step)
    cd[:, 1, 0] = (eta[0] - eta[1]) / (2 * step)
    cd[:, 1, 1] = (eta[2] - eta[3]) / (2 * step)
    return cd


@dataclass
class Cutout:
    """Arrays of one cutout, calibrated, before serialisation."""

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    x0: int
    y0: int
    wcs: LinearWcs
    partial: bool

    def to_bytes(self) -> bytes:
        """Serialise as a FITS file (the layout of ``CCDData.write``)."""
        return ccd_fits_bytes(
            self.image,
            self.variance,
            self.mask,
            self.wcs,
            meta={"CUTMINX": self.x0, "CUTMINY": self.y0},
        )


@dataclass
class CutoutMaker:
    """Cuts calibrated cutouts out of one exposure.

    Parameters
    ----------
    exposure : `tasks.images.Exposure`
        Image, variance, mask, bbox, WCS and photometric calibration.
    label : `str`
        Name used in log messages (``difference``, ``science``, ``template``).
    bad_planes : `tuple` [`str`], optional
        Mask planes that make a pixel invalid.
    photo_calib : `tasks.images.PhotoCalib`, optional
        Calibration to use instead of the exposure's.
    """

    exposure: object
    label: str
    bad_planes: tuple[str, ...] = BAD_PLANES
    photo_calib: object = None
    reasons: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        from tasks.images import MaskPlane

        exp = self.exposure
        calib = self.photo_calib or getattr(exp, "photo_calib", None)
        if calib is None:
            _log.warning(
                "%s exposure has no photometric calibration; pixels taken as nJy", self.label
            )
            self._factor = 1.0
        else:
            self._factor = float(calib.calibration_mean)
        bits = 0
        for name in self.bad_planes:
            bits |= int(MaskPlane[name])
        self._bad_bits = np.uint32(bits)
        self._no_data = np.uint32(int(MaskPlane.NO_DATA))
        self._bbox = exp.bbox
        self._image = np.asarray(exp.image)
        self._variance = np.asarray(exp.variance)
        self._mask = np.asarray(exp.mask)

    def positions(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parent pixel positions of sky positions in this exposure."""
        x, y = self.exposure.sky_to_pixel(np.asarray(ra, float), np.asarray(dec, float))
        return np.asarray(x, float), np.asarray(y, float)

    def local_wcs(
        self, x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray
    ) -> np.ndarray:
        """Local CD matrices (``(n, 2, 2)``, degrees/pixel) at the given positions."""
        return local_transform_matrices(self.exposure.wcs, x, y, ra, dec)

    def cut(
        self,
        x: float,
        y: float,
        size: int,
        ra: float,
        dec: float,
        cd: np.ndarray,
        src_id: int,
        wcs: LinearWcs | None = None,
    ) -> Cutout | None:
        """Cut one calibrated cutout; `None` (with a logged reason) when impossible.

        Parameters
        ----------
        x, y : `float`
            Parent pixel position of the source in this exposure.
        size : `int`
            Side of the square cutout in pixels.
        ra, dec : `float`
            Sky position of the source (the WCS reference point).
        cd : `numpy.ndarray`
            2×2 local CD matrix at the source.
        src_id : `int`
            DiaSource id, for messages.
        wcs : `LinearWcs`, optional
            The local WCS when already made for the same source and pixel grid.
        """
        bbox = self._bbox
        if not (np.isfinite(x) and np.isfinite(y)):
            return self._fail(src_id, "non-finite centroid", "")
        if not (bbox.x0 - 0.5 <= x < bbox.x1 + 0.5 and bbox.y0 - 0.5 <= y < bbox.y1 + 0.5):
            return self._fail(
                src_id,
                "centroid outside the exposure",
                f"({x:.1f}, {y:.1f}) vs [{bbox.x0}..{bbox.x1}]x[{bbox.y0}..{bbox.y1}]",
            )
        x0 = int(np.floor(x + 0.5)) - size // 2
        y0 = int(np.floor(y + 0.5)) - size // 2
        # array indices of the cutout within the exposure arrays
        j0, i0 = x0 - bbox.x0, y0 - bbox.y0
        j1, i1 = j0 + size, i0 + size
        height, width = self._image.shape
        partial = j0 < 0 or i0 < 0 or j1 > width or i1 > height
        factor = self._factor
        if not partial:
            image = self._image[i0:i1, j0:j1] * factor
            variance = self._variance[i0:i1, j0:j1] * (factor * factor)
            mask = (self._mask[i0:i1, j0:j1] & self._bad_bits) != 0
        else:
            image = np.full((size, size), np.nan, dtype=np.float32)
            variance = np.full((size, size), np.nan, dtype=np.float32)
            mask = np.ones((size, size), dtype=bool)
            ci0, cj0 = max(i0, 0), max(j0, 0)
            ci1, cj1 = min(i1, height), min(j1, width)
            dst = (slice(ci0 - i0, ci1 - i0), slice(cj0 - j0, cj1 - j0))
            src = (slice(ci0, ci1), slice(cj0, cj1))
            image[dst] = self._image[src] * factor
            variance[dst] = self._variance[src] * (factor * factor)
            mask[dst] = (self._mask[src] & self._bad_bits) != 0
            self.reasons["partial (edge)"] += 1
            _log.debug(
                "DiaSource %d: %s cutout is partial (edge of the exposure)", src_id, self.label
            )
        if not np.any(~mask & np.isfinite(image)):
            return self._fail(src_id, "no valid pixel in the cutout", "")
        if wcs is None:
            wcs = LinearWcs((float(ra), float(dec)), (x - x0 + 1.0, y - y0 + 1.0), cd)
        return Cutout(image, variance, mask, x0, y0, wcs, partial)

    def cut_many(
        self,
        x: np.ndarray,
        y: np.ndarray,
        sizes: np.ndarray,
        ra: np.ndarray,
        dec: np.ndarray,
        cd: np.ndarray,
        src_ids: np.ndarray,
    ) -> list[Cutout | None]:
        """Cut many cutouts: interior ones gathered in one numpy operation per size.

        Same results as calling `cut` for each source (edge and failed cases
        go through `cut`).
        """
        n = len(x)
        out: list[Cutout | None] = [None] * n
        bbox = self._bbox
        height, width = self._image.shape
        finite = np.isfinite(x) & np.isfinite(y)
        xs = np.where(finite, x, 0.0)
        ys = np.where(finite, y, 0.0)
        x0 = np.floor(xs + 0.5).astype(np.int64) - sizes // 2
        y0 = np.floor(ys + 0.5).astype(np.int64) - sizes // 2
        j0, i0 = x0 - bbox.x0, y0 - bbox.y0
        interior = finite & (j0 >= 0) & (i0 >= 0) & (j0 + sizes <= width) & (i0 + sizes <= height)
        factor = np.float32(self._factor)
        for size in np.unique(sizes[interior]).tolist():
            idx = np.flatnonzero(interior & (sizes == size))
            offsets = np.arange(size)
            rows = (i0[idx, None] + offsets)[:, :, None]
            cols = (j0[idx, None] + offsets)[:, None, :]
            # written straight into big-endian float32: the FITS byte order, no later copy
            images = np.empty((len(idx), size, size), dtype=">f4")
            np.multiply(self._image[rows, cols], factor, out=images)
            variances = np.empty((len(idx), size, size), dtype=">f4")
            np.multiply(self._variance[rows, cols], factor * factor, out=variances)
            masks = (self._mask[rows, cols] & self._bad_bits) != 0
            valid = np.any(~masks & np.isfinite(images), axis=(1, 2))
            for m, k in enumerate(idx.tolist()):
                if not valid[m]:
                    self._fail(int(src_ids[k]), "no valid pixel in the cutout", "")
                    continue
                wcs = LinearWcs(
                    (float(ra[k]), float(dec[k])),
                    (float(x[k] - x0[k] + 1.0), float(y[k] - y0[k] + 1.0)),
                    cd[k],
                )
                out[k] = Cutout(
                    images[m], variances[m], masks[m], int(x0[k]), int(y0[k]), wcs, False
                )
        for k in np.flatnonzero(~interior).tolist():
            out[k] = self.cut(
                float(x[k]), float(y[k]), int(sizes[k]), ra[k], dec[k], cd[k], int(src_ids[k])
            )
        return out

    def _fail(self, src_id: int, reason: str, detail: str) -> None:
        self.reasons[reason] += 1
        _log.debug("DiaSource %d: no %s cutout: %s %s", src_id, self.label, reason, detail)
        return None
