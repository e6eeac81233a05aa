"""Photometric calibration: instrumental counts to nanojansky."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from tasks.images.errors import ImageError
from tasks.images.persistence import params_from_hdu, params_to_hdu

__all__ = ["PhotoCalib"]


@dataclass(frozen=True)
class PhotoCalib:
    """A spatially constant photometric calibration.

    Parameters
    ----------
    calibration_mean : `float`
        nJy per instrumental count.
    calibration_err : `float`, optional
        1-sigma uncertainty of ``calibration_mean`` (nJy per count).
    """

    calibration_mean: float
    calibration_err: float = 0.0

    def __post_init__(self) -> None:
        mean = float(self.calibration_mean)
        err = float(self.calibration_err)
        if not (np.isfinite(mean) and mean > 0):
            raise ImageError(f"calibration_mean must be positive and finite, got {mean}")
        if not (np.isfinite(err) and err >= 0):
            raise ImageError(f"calibration_err must be non-negative and finite, got {err}")
        object.__setattr__(self, "calibration_mean", mean)
        object.__setattr__(self, "calibration_err", err)

    def instflux_to_nanojansky(
        self, flux: float | np.ndarray, flux_err: float | np.ndarray | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Convert instrumental fluxes (counts) to nJy.

        Parameters
        ----------
        flux : `float` or `numpy.ndarray`
            Instrumental fluxes.
        flux_err : `float` or `numpy.ndarray`, optional
            Their errors.  When given, the calibration error is added in
            quadrature (as in the LSST stack) and ``(flux_nJy, err_nJy)`` is returned.

        Returns
        -------
        flux_nJy : `numpy.ndarray`
            Calibrated fluxes (and errors when ``flux_err`` is given).
        """
        flux = np.asarray(flux, dtype=float)
        out = flux * self.calibration_mean
        if flux_err is None:
            return out
        flux_err = np.asarray(flux_err, dtype=float)
        err = np.hypot(flux_err * self.calibration_mean, flux * self.calibration_err)
        return out, err

    def nanojansky_to_instflux(self, flux: float | np.ndarray) -> np.ndarray:
        """Convert nJy to instrumental counts."""
        return np.asarray(flux, dtype=float) / self.calibration_mean

    def image_to_nanojansky(self, image: np.ndarray) -> np.ndarray:
        """Return an image (or variance-free array) in nJy per pixel."""
        return np.asarray(image) * self.calibration_mean

    def variance_to_nanojansky(self, variance: np.ndarray) -> np.ndarray:
        """Return a variance plane in nJy² per pixel."""
        return np.asarray(variance) * self.calibration_mean**2

    @property
    def zero_point(self) -> float:
        """AB magnitude of one instrumental count (``31.4 - 2.5 log10(mean)``)."""
        return 31.4 - 2.5 * float(np.log10(self.calibration_mean))

    def to_hdu(self) -> fits.ImageHDU:
        """Return the calibration as a FITS HDU."""
        return params_to_hdu(
            {"calibration_mean": self.calibration_mean, "calibration_err": self.calibration_err}
        )

    @classmethod
    def from_hdu(cls, hdu: fits.ImageHDU) -> PhotoCalib:
        """Rebuild from `to_hdu`'s output."""
        p = params_from_hdu(hdu)
        return cls(p["calibration_mean"], p["calibration_err"])
