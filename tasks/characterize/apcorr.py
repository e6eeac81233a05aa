"""Aperture-correction maps: Chebyshev fields of aperture flux / PSF flux.

An `ApCorrMap` holds, like Rubin's ``lsst.afw.image.ApCorrMap``, one
`ChebyshevBoundedField` per corrected quantity: ``base_PsfFlux_instFlux``
(the factor multiplying a PSF flux to put it on the reference-aperture
scale) and ``base_PsfFlux_instFluxErr`` (the factor for its error, the same
field here).  `measure_aperture_corrections` measures the ratios on bright
stars and fits the field with sigma clipping.  The map round-trips through
FITS with the exposure model's persistence registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from tasks.characterize.aperture import aperture_flux
from tasks.characterize.chebyshev import ChebyshevBoundedField
from tasks.core.base import TaskError
from tasks.forcedphot.psf_flux import measure_psf_flux, psf_images_at
from tasks.images.persistence import register_persistable

__all__ = [
    "PSF_FLUX_FIELD",
    "PSF_FLUX_ERR_FIELD",
    "ApCorrMap",
    "ApCorrMeasurement",
    "measure_aperture_corrections",
]

PSF_FLUX_FIELD = "base_PsfFlux_instFlux"
PSF_FLUX_ERR_FIELD = "base_PsfFlux_instFluxErr"


@register_persistable
class ApCorrMap(Mapping[str, ChebyshevBoundedField]):
    """Named aperture-correction fields over one detector.

    Parameters
    ----------
    fields : `dict` [`str`, `ChebyshevBoundedField`]
        Field per corrected quantity (at least `PSF_FLUX_FIELD`).
    """

    persistence_name = "ApCorrMap"

    def __init__(self, fields: Mapping[str, ChebyshevBoundedField]) -> None:
        if PSF_FLUX_FIELD not in fields:
            raise TaskError(f"an ApCorrMap needs a {PSF_FLUX_FIELD!r} field")
        self._fields = dict(fields)

    def __getitem__(self, name: str) -> ChebyshevBoundedField:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def evaluate(self, x: Any, y: Any, name: str = PSF_FLUX_FIELD) -> np.ndarray:
        """Correction factor of quantity ``name`` at positions (vectorised)."""
        return self._fields[name].evaluate(x, y)

    def to_hdu(self) -> fits.BinTableHDU:
        """Serialise to a binary table, one row per field."""
        names = list(self._fields)
        n_max = max(f.coefficients.size for f in self._fields.values())
        coeffs = np.full((len(names), n_max), np.nan)
        for i, name in enumerate(names):
            c = self._fields[name].coefficients
            coeffs[i, : c.size] = c
        columns = [
            fits.Column(name="NAME", format=f"{max(len(n) for n in names)}A", array=names),
            fits.Column(name="ORDER", format="K", array=[self._fields[n].order for n in names]),
            fits.Column(
                name="BBOX", format="4D", array=np.array([self._fields[n].bbox for n in names])
            ),
            fits.Column(name="COEFFS", format=f"{n_max}D", array=coeffs),
        ]
        return fits.BinTableHDU.from_columns(columns)

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU) -> ApCorrMap:
        """Rebuild a map written by `to_hdu`."""
        data = hdu.data
        fields = {}
        for row in range(len(data)):
            coeffs = np.asarray(data["COEFFS"][row], dtype=np.float64)
            fields[str(data["NAME"][row]).strip()] = ChebyshevBoundedField(
                bbox=tuple(np.asarray(data["BBOX"][row], dtype=np.float64)),
                order=int(data["ORDER"][row]),
                coefficients=coeffs[np.isfinite(coeffs)],
            )
        return cls(fields)

    def __repr__(self) -> str:
        return f"ApCorrMap({', '.join(self._fields)})"


@dataclass
class ApCorrMeasurement:
    """Per-star aperture-correction measurements and the fitted map.

    Attributes
    ----------
    ap_corr_map : `ApCorrMap`
    psf_flux, psf_flux_err, ap_flux, ap_flux_err : `numpy.ndarray`
        Instrumental fluxes of every input star.
    ratio : `numpy.ndarray`
        ``ap_flux / psf_flux`` (NaN where not measured).
    used : `numpy.ndarray` of bool
        Stars kept by the clipped fit.
    """

    ap_corr_map: ApCorrMap
    psf_flux: np.ndarray
    psf_flux_err: np.ndarray
    ap_flux: np.ndarray
    ap_flux_err: np.ndarray
    ratio: np.ndarray
    used: np.ndarray


def measure_aperture_corrections(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None,
    origin: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    psf: Any,
    domain: tuple[float, float, float, float],
    radius: float = 12.0,
    order: int = 2,
    bad_mask: int = 0,
    min_sn: float = 50.0,
    n_sigma: float = 3.0,
    n_iter: int = 3,
) -> ApCorrMeasurement:
    """Measure aperture / PSF flux ratios of stars and fit a Chebyshev field.

    Parameters
    ----------
    image, variance, mask, origin
        The science exposure's planes and parent origin.
    x, y : `numpy.ndarray`
        Star positions (parent pixels).
    psf : `tasks.images.Psf`
        The PSF model defining the PSF flux.
    domain : `tuple`
        ``(xmin, ymin, xmax, ymax)`` of the field.
    radius : `float`, optional
        Reference aperture radius in pixels.
    order : `int`, optional
        Highest Chebyshev order of the field; a lower one is kept when the
        data do not support it (`ChebyshevBoundedField.fit_best_order`).
    bad_mask : `int`, optional
        Mask bits of unusable pixels.
    min_sn : `float`, optional
        Minimum PSF-flux S/N of a star used in the fit.
    n_sigma, n_iter : optional
        Sigma clipping of the fit.

    Returns
    -------
    measurement : `ApCorrMeasurement`

    Raises
    ------
    TaskError
        If too few stars are usable for the field.
    """
    psf_res = measure_psf_flux(
        image, variance, mask, origin, x, y, psf_images_at(psf, x, y), bad_mask
    )
    ap_res = aperture_flux(image, variance, mask, origin, x, y, radius, bad_mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ap_res.flux / psf_res.flux
        sn = psf_res.flux / psf_res.flux_err
        # error of the ratio; the two fluxes share pixels, so this is conservative
        ratio_err = np.abs(ratio) * np.hypot(
            ap_res.flux_err / ap_res.flux, psf_res.flux_err / psf_res.flux
        )
    candidates = np.isfinite(ratio) & np.isfinite(ratio_err) & (ratio_err > 0) & (sn >= min_sn)
    candidates &= ~psf_res.flag_edge
    errors = np.where(candidates, ratio_err, np.inf)
    field, used = ChebyshevBoundedField.fit_best_order(
        x, y, np.where(candidates, ratio, np.nan), domain, order, errors, n_sigma, n_iter
    )
    ap_corr_map = ApCorrMap({PSF_FLUX_FIELD: field, PSF_FLUX_ERR_FIELD: field})
    return ApCorrMeasurement(
        ap_corr_map=ap_corr_map,
        psf_flux=psf_res.flux,
        psf_flux_err=psf_res.flux_err,
        ap_flux=ap_res.flux,
        ap_flux_err=ap_res.flux_err,
        ratio=ratio,
        used=used,
    )
