"""Atmospheric refraction for the simulator (ERFA's ``refco`` model).

The template task implements Stone (1996) independently; the simulator uses
``erfa.refco`` (the refraction constants of the SOFA/ERFA library, which
ships with astropy) so the two are independent and can check each other.
"""

from __future__ import annotations

import erfa
import numpy as np

from tasks.images.filters import get_band
from tasks.images.visit_info import Weather

__all__ = ["refraction", "differential_refraction", "sed_dcr_shift", "sed_subfilter_fractions"]

_N_SED_SAMPLES = 41


def refraction(
    wavelength_nm: float | np.ndarray, zenith_distance_deg: float, weather: Weather
) -> np.ndarray:
    """Return the refraction (arcsec, toward the zenith) at an observed zenith distance.

    Parameters
    ----------
    wavelength_nm : `float` or `numpy.ndarray`
        Wavelengths in nm.
    zenith_distance_deg : `float`
        Observed zenith distance in degrees (below about 75 degrees).
    weather : `tasks.images.Weather`
        Temperature (°C), pressure (hPa) and relative humidity (%).
    """
    wl = np.asarray(wavelength_nm, dtype=float)
    refa, refb = erfa.refco(
        weather.pressure, weather.temperature, weather.humidity / 100.0, wl / 1000.0
    )
    tz = np.tan(np.radians(zenith_distance_deg))
    return np.degrees(refa * tz + refb * tz**3) * 3600.0


def differential_refraction(
    wavelength_nm: float | np.ndarray,
    reference_nm: float,
    zenith_distance_deg: float,
    weather: Weather,
) -> np.ndarray:
    """Refraction at ``wavelength_nm`` minus that at ``reference_nm`` (arcsec)."""
    return refraction(wavelength_nm, zenith_distance_deg, weather) - refraction(
        reference_nm, zenith_distance_deg, weather
    )


def _sed_grid(band: str) -> np.ndarray:
    b = get_band(band)
    fractions = (np.arange(_N_SED_SAMPLES) + 0.5) / _N_SED_SAMPLES
    return b.wavelength_min + fractions * b.bandwidth


def _sed_weights(band: str, sed_slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the wavelength grid and normalised weights ``(n_src, n_wl)`` of each SED in a band.

    A source's flux density varies as ``(λ / λ_eff)**sed_slope`` across the
    band (a flat throughput), so ``sed_slope > 0`` is redder.
    """
    wl = _sed_grid(band)
    lam_eff = get_band(band).effective_wavelength
    slope = np.atleast_1d(np.asarray(sed_slope, dtype=float))
    w = (wl[None, :] / lam_eff) ** slope[:, None]
    return wl, w / w.sum(axis=1, keepdims=True)


def sed_dcr_shift(
    band: str, sed_slope: np.ndarray, zenith_distance_deg: float, weather: Weather
) -> np.ndarray:
    """Flux-weighted differential refraction (arcsec, toward the zenith) of each source.

    The light of a source with spectral slope ``a`` is displaced by the mean of
    ``R(λ) - R(λ_eff)`` over the band, weighted by its SED; for a flat
    spectrum (``a = 0``) this is the mean over the band.
    """
    wl, w = _sed_weights(band, sed_slope)
    dr = differential_refraction(
        wl, get_band(band).effective_wavelength, zenith_distance_deg, weather
    )
    return w @ dr


def sed_subfilter_fractions(band: str, n_subfilters: int, sed_slope: np.ndarray) -> np.ndarray:
    """Fraction of each source's band flux in each of ``n`` equal sub-filters.

    Returns
    -------
    fractions : `numpy.ndarray`
        ``(n_src, n_subfilters)``; rows sum to 1 (exactly integrated power laws).
    """
    b = get_band(band)
    edges = np.linspace(b.wavelength_min, b.wavelength_max, int(n_subfilters) + 1)
    slope = np.atleast_1d(np.asarray(sed_slope, dtype=float))[:, None]
    x = edges[None, :] / b.effective_wavelength
    # integral of x**a dx is x**(a+1)/(a+1), or log(x) when a == -1
    near_minus_one = np.abs(slope + 1.0) < 1e-9
    safe = np.where(near_minus_one, 1.0, slope + 1.0)
    cumulative = np.where(near_minus_one, np.log(x), x**safe / safe)
    parts = np.diff(cumulative, axis=1)
    return parts / parts.sum(axis=1, keepdims=True)
