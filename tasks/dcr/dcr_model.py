"""DCR models: sub-filter images of one sky patch and their visit-matched sum.

A DCR model holds, for one patch and band, ``N`` images of the static sky,
each the flux in one equal slice of the band (`tasks.images.subfilter_wavelengths`).
They share the pixel grid, WCS, PSF and calibration.  For a visit, each
sub-filter is shifted by the differential chromatic refraction between its
slice and the band's effective wavelength (by default Rubin's convention:
the average of the refraction at the slice's two end wavelengths), toward
the zenith (the direction of the parallactic angle on the sky, projected
through the model WCS), and
the shifted images are summed: the template as the visit's atmosphere would
have recorded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from tasks.dcr.errors import DcrError, EmptyPatchError, MissingSubfilterError
from tasks.dcr.refraction import differential_refraction
from tasks.dcr.shift import has_usable_pixel, shift_and_sum
from tasks.images import Exposure, MaskPlane, VisitInfo, get_band, subfilter_wavelengths
from tasks.images.wcs_utils import pixel_scale_arcsec, sky_direction_in_pixels

__all__ = ["SUBFILTER_CONVENTIONS", "DcrModel", "SubfilterConvention", "subfilter_refraction"]

SubfilterConvention = Literal["endpoints", "mean"]
SUBFILTER_CONVENTIONS = ("endpoints", "mean")
"""How a sub-filter's refraction is taken: Rubin's end-wavelength average, or a slice mean."""

_SAMPLES_PER_SUBFILTER = 9
_UNUSABLE = MaskPlane.NO_DATA | MaskPlane.BAD


def subfilter_refraction(
    band: str,
    n_subfilters: int,
    visit_info: VisitInfo,
    convention: SubfilterConvention = "endpoints",
) -> np.ndarray:
    """Differential refraction (arcsec) of each sub-filter for a visit.

    The refraction is taken relative to that at the band's effective
    wavelength; positive values move the sub-filter toward the zenith.

    Parameters
    ----------
    band : `str`
        Band name.
    n_subfilters : `int`
        Number of sub-filters.
    visit_info : `tasks.images.VisitInfo`
        Zenith distance, weather and site of the visit.
    convention : {"endpoints", "mean"}, optional
        ``"endpoints"`` (the default, as Rubin's ``ip_diffim`` does): the
        average of the refraction at the sub-filter's two end wavelengths.
        ``"mean"``: the mean over 9 evenly spaced samples of the slice (the
        flux-weighted mean for a flat spectrum).

    Returns
    -------
    delta : `numpy.ndarray`
        ``(n_subfilters,)`` arcsec, bluest sub-filter first.

    Raises
    ------
    DcrError
        If ``convention`` is not one of the two names.
    """
    limits = subfilter_wavelengths(band, n_subfilters)
    if convention == "endpoints":
        wavelengths = limits
    elif convention == "mean":
        fractions = (np.arange(_SAMPLES_PER_SUBFILTER) + 0.5) / _SAMPLES_PER_SUBFILTER
        wavelengths = limits[:, :1] + fractions[None, :] * (limits[:, 1:] - limits[:, :1])
    else:
        raise DcrError(
            f"unknown sub-filter wavelength convention {convention!r}; "
            f"expected one of {SUBFILTER_CONVENTIONS}"
        )
    weather = visit_info.weather
    kwargs = {
        "temperature": None if weather is None else weather.temperature,
        "pressure": None if weather is None else weather.pressure,
        "humidity": None if weather is None else weather.humidity,
        "latitude_deg": visit_info.site_latitude,
        "altitude_m": visit_info.site_height,
    }
    delta = differential_refraction(
        wavelengths, get_band(band).effective_wavelength, visit_info.zenith_distance, **kwargs
    )
    return delta.mean(axis=1)


class DcrModel:
    """Sub-filter images of one patch.

    Parameters
    ----------
    subfilters : `list` [`tasks.images.Exposure`]
        One exposure per sub-filter, bluest first, on the same pixel grid.
    band : `str`
        Band of the model.
    name : `str`, optional
        Name of the patch (used in error messages).
    convention : {"endpoints", "mean"}, optional
        How each sub-filter's refraction is taken (`subfilter_refraction`);
        the default is Rubin's end-wavelength average.

    Raises
    ------
    MissingSubfilterError
        If fewer than one sub-filter is given.
    DcrError
        If the sub-filters do not share a pixel grid, or have the wrong band.
    EmptyPatchError
        If no sub-filter holds a finite, usable pixel.
    """

    def __init__(
        self,
        subfilters: Sequence[Exposure],
        band: str,
        name: str = "patch",
        convention: SubfilterConvention = "endpoints",
    ) -> None:
        subfilters = list(subfilters)
        self.name = name
        if convention not in SUBFILTER_CONVENTIONS:
            raise DcrError(
                f"{name}: unknown sub-filter wavelength convention {convention!r}; "
                f"expected one of {SUBFILTER_CONVENTIONS}"
            )
        self.convention = convention
        if not subfilters:
            raise MissingSubfilterError(f"{name}: a DCR model needs at least one sub-filter")
        get_band(band)
        first = subfilters[0]
        for n, exp in enumerate(subfilters):
            if exp.bbox != first.bbox:
                raise DcrError(f"{name}: sub-filter {n} bbox {exp.bbox} differs from {first.bbox}")
            if exp.band is not None and exp.band != band:
                raise DcrError(f"{name}: sub-filter {n} is in band {exp.band}, not {band}")
        if first.wcs is None:
            raise DcrError(f"{name}: the DCR model has no WCS")
        self.band = band
        self.subfilters = subfilters
        if not self._any_usable():
            raise EmptyPatchError(f"{name}: every pixel of every sub-filter is NaN or NO_DATA")

    # -- shared properties ---------------------------------------------
    @property
    def n_subfilters(self) -> int:
        """Number of sub-filters."""
        return len(self.subfilters)

    @property
    def bbox(self):
        """Pixel box of the patch (parent coordinates)."""
        return self.subfilters[0].bbox

    @property
    def wcs(self):
        """WCS of the patch (parent pixel coordinates)."""
        return self.subfilters[0].wcs

    @property
    def psf(self):
        """PSF of the model (shared by the sub-filters)."""
        return self.subfilters[0].psf

    @property
    def photo_calib(self):
        """Calibration of the model (shared by the sub-filters)."""
        return self.subfilters[0].photo_calib

    def _any_usable(self) -> bool:
        return any(has_usable_pixel(exp.image, exp.mask, int(_UNUSABLE)) for exp in self.subfilters)

    # -- DCR ---------------------------------------------------------------
    def shifts(self, visit_info: VisitInfo) -> np.ndarray:
        """Pixel shifts ``(dx, dy)`` of each sub-filter for a visit.

        Parameters
        ----------
        visit_info : `tasks.images.VisitInfo`
            The visit.

        Returns
        -------
        shifts : `numpy.ndarray`
            ``(n_subfilters, 2)`` shifts in the model's pixels.
        """
        if visit_info.band != self.band:
            raise DcrError(f"{self.name}: model band {self.band} but visit band {visit_info.band}")
        delta = subfilter_refraction(self.band, self.n_subfilters, visit_info, self.convention)
        cx, cy = self.bbox.center
        scale = pixel_scale_arcsec(self.wcs, cx, cy)
        ux, uy = sky_direction_in_pixels(self.wcs, cx, cy, visit_info.parallactic_angle)
        amplitude = delta / scale
        return np.column_stack([amplitude * ux, amplitude * uy])

    def build_matched_template(self, visit_info: VisitInfo) -> Exposure:
        """Sum the sub-filters shifted by the visit's DCR.

        Parameters
        ----------
        visit_info : `tasks.images.VisitInfo`
            The science visit.

        Returns
        -------
        template : `tasks.images.Exposure`
            On the model's grid, with the model's WCS, PSF and calibration.
            The variance is the sum of the sub-filter variances; the mask is
            the OR of the sub-filter masks, plus ``NO_DATA`` (image NaN)
            wherever a shifted sub-filter had no data.
        """
        shifts = self.shifts(visit_info)
        variance = np.zeros(self.bbox.shape, dtype=np.float32)
        mask = np.zeros(self.bbox.shape, dtype=np.uint32)
        # one spline prefilter for the sum of the shifted sub-filters (see tasks.dcr.shift)
        image, no_data = shift_and_sum(
            [exp.image for exp in self.subfilters],
            [(dy, dx) for dx, dy in shifts],
            masks=[exp.mask for exp in self.subfilters],
            bad_bits=int(_UNUSABLE),
        )
        for exp, (dx, dy) in zip(self.subfilters, shifts, strict=True):
            # variance and mask move by the nearest whole pixel: both are
            # smooth or categorical, and the sub-pixel part is below their scale
            ix, iy = int(np.round(dx)), int(np.round(dy))
            variance += _roll_fill(exp.variance, iy, ix, 0.0)
            mask |= _roll_fill(exp.mask & ~np.uint32(_UNUSABLE), iy, ix, 0).astype(np.uint32)
        no_data |= ~np.isfinite(variance)
        image[no_data] = np.nan
        variance[no_data] = np.nan
        mask[no_data] |= np.uint32(MaskPlane.NO_DATA)
        return Exposure(
            image,
            mask,
            variance,
            self.wcs,
            self.bbox,
            psf=self.psf,
            photo_calib=self.photo_calib,
            visit_info=None,
            band=self.band,
        )

    def build_broadband(self) -> Exposure:
        """Plain sum of the sub-filters (the template without DCR matching)."""
        image = np.zeros(self.bbox.shape)
        variance = np.zeros(self.bbox.shape)
        mask = np.zeros(self.bbox.shape, dtype=np.uint32)
        for exp in self.subfilters:
            image += exp.image
            variance += exp.variance
            mask |= exp.mask
        return Exposure(
            image,
            mask,
            variance,
            self.wcs,
            self.bbox,
            psf=self.psf,
            photo_calib=self.photo_calib,
            band=self.band,
        )


def _roll_fill(array: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Shift an array by whole pixels, filling the uncovered edge with ``fill``."""
    if dy == 0 and dx == 0:
        return array
    out = np.full_like(array, fill)
    h, w = array.shape
    src_rows = slice(max(-dy, 0), h - max(dy, 0))
    dst_rows = slice(max(dy, 0), h - max(-dy, 0))
    src_cols = slice(max(-dx, 0), w - max(dx, 0))
    dst_cols = slice(max(dx, 0), w - max(-dx, 0))
    out[dst_rows, dst_cols] = array[src_rows, src_cols]
    return out
