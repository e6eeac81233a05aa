"""The exposure: image, mask and variance with WCS, PSF, calibration and visit info."""

from __future__ import annotations

import copy as _copy
from os import PathLike
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from tasks.images.calib import PhotoCalib
from tasks.images.errors import ImageError
from tasks.images.geom import Box2I
from tasks.images.mask import MASK_DTYPE, MaskPlane
from tasks.images.psf import Psf, nearest_pixel
from tasks.images.visit_info import VisitInfo
from tasks.images.wcs_utils import shift_wcs

__all__ = ["Exposure"]


class Exposure:
    """An image with its mask, variance and metadata.

    Parameters
    ----------
    image : `numpy.ndarray`
        Pixel values (float32 or float64), shape ``bbox.shape``.
    mask : `numpy.ndarray` or `None`
        `MaskPlane` bits (stored as uint32); `None` means all zero.
    variance : `numpy.ndarray`
        Per-pixel variance, same shape and float dtype as ``image``.
    wcs : `astropy.wcs.WCS` or `None`
        Maps **parent** pixel coordinates (0-based ``x, y``) to ICRS ra/dec (deg).
    bbox : `Box2I` or `None`
        Where the arrays sit in parent coordinates; default ``Box2I(0, 0, w, h)``.
    psf : `Psf`, optional
        PSF model (in parent coordinates).
    photo_calib : `PhotoCalib`, optional
        Counts → nJy.
    visit_info : `VisitInfo`, optional
        Observing conditions.
    detector : `int`, optional
        Detector id.
    band : `str`, optional
        Band; defaults to ``visit_info.band``.
    ap_corr_map : `object`, optional
        Aperture-correction map with ``evaluate(x, y)`` (set by the final
        characterization); stored in FITS files when its class is registered
        with `tasks.images.register_persistable`.
    """

    def __init__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        variance: np.ndarray,
        wcs: WCS | None,
        bbox: Box2I | None = None,
        psf: Psf | None = None,
        photo_calib: PhotoCalib | None = None,
        visit_info: VisitInfo | None = None,
        detector: int | None = None,
        band: str | None = None,
        ap_corr_map: Any = None,
    ) -> None:
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype.kind != "f":
            raise ImageError(f"image must be a 2-D float array, got {image.dtype} {image.shape}")
        if bbox is None:
            bbox = Box2I(0, 0, image.shape[1], image.shape[0])
        if image.shape != bbox.shape:
            raise ImageError(f"image shape {image.shape} does not match bbox shape {bbox.shape}")
        if mask is None:
            mask = np.zeros(bbox.shape, dtype=MASK_DTYPE)
        mask = np.asarray(mask)
        if mask.shape != bbox.shape or mask.dtype.kind not in "iu":
            raise ImageError(f"mask must be an integer array of shape {bbox.shape}")
        if mask.dtype != MASK_DTYPE:
            mask = mask.astype(MASK_DTYPE)
        variance = np.asarray(variance)
        if variance.shape != bbox.shape or variance.dtype.kind != "f":
            raise ImageError(f"variance must be a float array of shape {bbox.shape}")
        if wcs is not None and not isinstance(wcs, WCS):
            raise ImageError(f"wcs must be an astropy WCS, got {type(wcs).__name__}")
        if psf is not None and not isinstance(psf, Psf):
            raise ImageError(f"psf must be a Psf, got {type(psf).__name__}")
        self.image = image
        self.mask = mask
        self.variance = variance
        self.wcs = wcs
        self.bbox = bbox
        self.psf = psf
        self.photo_calib = photo_calib
        self.visit_info = visit_info
        self.detector = None if detector is None else int(detector)
        if band is None and visit_info is not None:
            band = visit_info.band
        self.band = band
        self.ap_corr_map = ap_corr_map

    # -- geometry ------------------------------------------------------
    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.bbox.width

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.bbox.height

    def _require_wcs(self) -> WCS:
        if self.wcs is None:
            raise ImageError("this exposure has no WCS")
        return self.wcs

    def sky_to_pixel(
        self, ra: float | np.ndarray, dec: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Convert ICRS ra/dec (deg) to parent pixel ``(x, y)`` (vectorised)."""
        wcs = self._require_wcs()
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        # the iterative inverse is only needed when there are distortions
        convert = wcs.all_world2pix if wcs.has_distortion else wcs.wcs_world2pix
        x, y = convert(ra, dec, 0)
        return np.asarray(x), np.asarray(y)

    def pixel_to_sky(
        self, x: float | np.ndarray, y: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Convert parent pixel ``(x, y)`` to ICRS ra/dec in degrees (vectorised)."""
        wcs = self._require_wcs()
        ra, dec = wcs.all_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
        return np.asarray(ra), np.asarray(dec)

    def array_wcs(self) -> WCS:
        """Return the WCS of array indices (``[0, 0]`` is the first pixel of ``bbox``)."""
        return shift_wcs(self._require_wcs(), self.bbox.x0, self.bbox.y0)

    # -- copies and cutouts ---------------------------------------------
    def _with_arrays(
        self, image: np.ndarray, mask: np.ndarray, variance: np.ndarray, bbox: Box2I
    ) -> Exposure:
        return Exposure(
            image,
            mask,
            variance,
            self.wcs,
            bbox,
            psf=self.psf,
            photo_calib=self.photo_calib,
            visit_info=self.visit_info,
            detector=self.detector,
            band=self.band,
            ap_corr_map=self.ap_corr_map,
        )

    def copy(self) -> Exposure:
        """Return a copy with independent arrays (models are shared; they are immutable)."""
        out = self._with_arrays(
            self.image.copy(), self.mask.copy(), self.variance.copy(), self.bbox
        )
        out.wcs = None if self.wcs is None else self.wcs.deepcopy()
        return out

    def subset(self, bbox: Box2I, *, copy: bool = True) -> Exposure:
        """Return the part of this exposure inside ``bbox`` (which must be inside).

        Parameters
        ----------
        bbox : `Box2I`
            Parent pixel box.
        copy : `bool`, optional
            Copy the pixels (default); with `False` the planes are views
            that share memory with this exposure.
        """
        rows, cols = self.bbox.slices(bbox)
        planes = (self.image[rows, cols], self.mask[rows, cols], self.variance[rows, cols])
        if copy:
            planes = tuple(plane.copy() for plane in planes)
        return self._with_arrays(*planes, bbox)

    def get_cutout(self, center: SkyCoord | tuple[float, float], size: tuple[int, int]) -> Exposure:
        """Return a cutout of ``size = (width, height)`` pixels around ``center``.

        Parameters
        ----------
        center : `astropy.coordinates.SkyCoord` or `tuple` [`float`, `float`]
            Sky position, or parent pixel position ``(x, y)``.
        size : `tuple` [`int`, `int`]
            Cutout ``(width, height)`` in pixels (positive).

        Returns
        -------
        cutout : `Exposure`
            Its ``bbox`` starts at ``round(x) - width // 2``,
            ``round(y) - height // 2``; it keeps the parent WCS and all models.
            Pixels outside this exposure are NaN in image and variance and
            ``NO_DATA`` in the mask.

        Raises
        ------
        ImageError
            If the size is not positive or the centre is not finite.
        """
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ImageError(f"cutout size must be positive, got {size}")
        if isinstance(center, SkyCoord):
            icrs = center.icrs
            x, y = self.sky_to_pixel(icrs.ra.deg, icrs.dec.deg)
        else:
            x, y = center
        x, y = float(np.asarray(x)), float(np.asarray(y))
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ImageError(f"cutout centre is not finite: {center}")
        box = Box2I(
            int(nearest_pixel(x)) - width // 2, int(nearest_pixel(y)) - height // 2, width, height
        )
        image = np.full(box.shape, np.nan, dtype=self.image.dtype)
        variance = np.full(box.shape, np.nan, dtype=self.variance.dtype)
        mask = np.full(box.shape, MaskPlane.NO_DATA, dtype=MASK_DTYPE)
        overlap = box.intersection(self.bbox)
        if overlap is not None:
            src = self.bbox.slices(overlap)
            dst = box.slices(overlap)
            image[dst] = self.image[src]
            variance[dst] = self.variance[src]
            mask[dst] = self.mask[src]
        return self._with_arrays(image, mask, variance, box)

    # -- persistence ------------------------------------------------------
    def write_fits(self, path: str | PathLike[str]) -> None:
        """Write the exposure to one multi-extension FITS file (lossless)."""
        from tasks.images.exposure_io import write_exposure

        write_exposure(self, path)

    @classmethod
    def read_fits(cls, path: str | PathLike[str]) -> Exposure:
        """Read an exposure written by `write_fits`."""
        from tasks.images.exposure_io import read_exposure

        return read_exposure(path)

    def __repr__(self) -> str:
        return (
            f"Exposure(bbox={self.bbox}, band={self.band!r}, detector={self.detector}, "
            f"visit={None if self.visit_info is None else self.visit_info.visit_id}, "
            f"psf={type(self.psf).__name__ if self.psf is not None else None})"
        )

    def __deepcopy__(self, memo: dict) -> Exposure:
        out = self.copy()
        out.psf = _copy.deepcopy(self.psf, memo)
        out.ap_corr_map = _copy.deepcopy(self.ap_corr_map, memo)
        return out
