"""LSST bands and their sub-filters.

Effective wavelength and band limits (nm) follow the LSSTCam filter
definitions of the Rubin ``obs_lsst`` package.  The bandwidth is
``wavelength_max - wavelength_min``; DCR sub-filters are equal slices of
``[wavelength_min, wavelength_max]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.images.errors import ImageError

__all__ = [
    "BANDS",
    "Band",
    "get_band",
    "effective_wavelength",
    "bandwidth",
    "subfilter_wavelengths",
    "subfilter_effective_wavelengths",
]


@dataclass(frozen=True)
class Band:
    """One photometric band.

    Attributes
    ----------
    name : `str`
        One of ``u g r i z y``.
    effective_wavelength : `float`
        Effective wavelength in nm.
    wavelength_min, wavelength_max : `float`
        Band limits in nm.
    """

    name: str
    effective_wavelength: float
    wavelength_min: float
    wavelength_max: float

    @property
    def bandwidth(self) -> float:
        """Width of the band in nm."""
        return self.wavelength_max - self.wavelength_min


BANDS: dict[str, Band] = {
    b.name: b
    for b in (
        Band("u", 368.48, 320.00, 408.60),
        Band("g", 480.20, 386.40, 567.00),
        Band("r", 623.12, 537.00, 706.00),
        Band("i", 754.17, 676.00, 803.00),
        Band("z", 869.05, 803.00, 938.60),
        Band("y", 973.64, 908.40, 1099.60),
    )
}


def get_band(band: str) -> Band:
    """Return the definition of ``band``.

    Raises
    ------
    ImageError
        If ``band`` is not one of ``u g r i z y``.
    """
    try:
        return BANDS[band]
    except (KeyError, TypeError):
        raise ImageError(f"unknown band {band!r}; expected one of {' '.join(BANDS)}") from None


def effective_wavelength(band: str) -> float:
    """Effective wavelength of ``band`` in nm."""
    return get_band(band).effective_wavelength


def bandwidth(band: str) -> float:
    """Width of ``band`` in nm."""
    return get_band(band).bandwidth


def subfilter_wavelengths(band: str, n: int) -> np.ndarray:
    """Return the limits of ``n`` equal sub-filters of ``band``.

    Parameters
    ----------
    band : `str`
        Band name.
    n : `int`
        Number of sub-filters (>= 1).

    Returns
    -------
    limits : `numpy.ndarray`
        ``(n, 2)`` array of ``(wavelength_min, wavelength_max)`` in nm, bluest first.
    """
    if int(n) != n or n < 1:
        raise ImageError(f"number of sub-filters must be a positive integer, got {n}")
    b = get_band(band)
    edges = np.linspace(b.wavelength_min, b.wavelength_max, int(n) + 1)
    return np.column_stack([edges[:-1], edges[1:]])


def subfilter_effective_wavelengths(band: str, n: int) -> np.ndarray:
    """Return the central wavelength (nm) of each of ``n`` sub-filters of ``band``."""
    return subfilter_wavelengths(band, n).mean(axis=1)
