"""Atmospheric refraction for the simulator (ERFA's ``refco`` model).

The template task implements Stone (1996) independently; the simulator uses
``erfa.refco`` (the refraction constants of the SOFA/ERFA library, which
ships with astropy) so the two are independent and can check each other.

A source's light is spread along the zenith direction by differential
chromatic refraction (DCR): its spectrum (a power law across the band, flat
throughput) weights the refraction ``R(λ) - R(λ_eff)`` of each wavelength.
`sed_dcr_shift` is the flux-weighted mean of that distribution (where the
light's centroid lies); `sed_dcr_components` splits it into a few
sub-band components, the Gauss quadrature rule of the distribution, which
reproduces its first ``2n - 1`` moments (the mean and the variance included)
exactly.
"""

from __future__ import annotations

import erfa
import numpy as np
from numpy.polynomial.legendre import leggauss

from tasks.images.filters import get_band
from tasks.images.visit_info import Weather

__all__ = [
    "refraction",
    "differential_refraction",
    "sed_dcr_shift",
    "sed_dcr_components",
    "dcr_spread",
    "sed_subfilter_fractions",
]

_N_SED_SAMPLES = 48
"""Gauss-Legendre wavelengths per band on which SED integrals are evaluated
(the integrands are smooth, so 48 nodes integrate them to rounding)."""
MAX_DCR_COMPONENTS = _N_SED_SAMPLES // 2
"""Most components `sed_dcr_components` returns."""


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


def _sed_grid(band: str) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre wavelengths (nm) over the band and their quadrature weights."""
    b = get_band(band)
    nodes, weights = leggauss(_N_SED_SAMPLES)
    return b.wavelength_min + 0.5 * (nodes + 1.0) * b.bandwidth, weights


def _sed_weights(band: str, sed_slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the wavelength grid and normalised weights ``(n_src, n_wl)`` of each SED in a band.

    A source's flux density varies as ``(λ / λ_eff)**sed_slope`` across the
    band (a flat throughput), so ``sed_slope > 0`` is redder.  The weights
    are the SED times the quadrature weights, normalised to sum 1.
    """
    wl, quad = _sed_grid(band)
    lam_eff = get_band(band).effective_wavelength
    slope = np.atleast_1d(np.asarray(sed_slope, dtype=float))
    w = quad[None, :] * (wl[None, :] / lam_eff) ** slope[:, None]
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


def dcr_spread(band: str, zenith_distance_deg: float, weather: Weather) -> float:
    """Length (arcsec) over which DCR spreads light across the band: ``R(λ_min) - R(λ_max)``."""
    b = get_band(band)
    r = refraction(np.array([b.wavelength_min, b.wavelength_max]), zenith_distance_deg, weather)
    return float(r[0] - r[1])


def sed_dcr_components(
    band: str,
    sed_slope: np.ndarray,
    zenith_distance_deg: float,
    weather: Weather,
    n_components: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split each source's DCR-spread light into ``n`` sub-band components.

    The light of a source is distributed along the zenith direction as its
    SED weights the differential refraction ``R(λ) - R(λ_eff)`` over the band.
    The components are the ``n``-point Gauss quadrature rule of that
    distribution (nodes: the eigenvalues of its Jacobi matrix, built by the
    Stieltjes procedure on the wavelength grid of `sed_dcr_shift`).  Each node
    is the refraction of one wavelength of the band and its weight the flux
    fraction of a sub-band around it (the Chebyshev-Markov-Stieltjes
    separation); the rule reproduces the distribution's moments of order
    ``0 .. 2n - 1``, so the components' flux-weighted mean is `sed_dcr_shift`
    and their variance the SED's DCR variance, and the rendering of a smooth
    PSF spread by it converges exponentially with ``n``.

    Parameters
    ----------
    band : `str`
        Band name.
    sed_slope : `numpy.ndarray`
        Spectral slope of each source (see `sed_dcr_shift`).
    zenith_distance_deg : `float`
        Observed zenith distance in degrees.
    weather : `tasks.images.Weather`
        Temperature, pressure and humidity.
    n_components : `int`
        Components per source, ``1 .. MAX_DCR_COMPONENTS``; one is the mean
        shift alone.

    Returns
    -------
    shifts : `numpy.ndarray`
        ``(n_src, n)`` differential refraction of each component (arcsec,
        toward the zenith), increasing along each row.
    weights : `numpy.ndarray`
        ``(n_src, n)`` flux fractions; rows sum to 1.

    Raises
    ------
    ValueError
        If ``n_components`` is out of range, or above one when the band's
        light is not spread at all (zenith distance 0).
    """
    n = int(n_components)
    if n != n_components or not 1 <= n <= MAX_DCR_COMPONENTS:
        raise ValueError(
            f"n_components must be an integer in 1..{MAX_DCR_COMPONENTS}, got {n_components}"
        )
    wl, w = _sed_weights(band, sed_slope)
    dr = differential_refraction(
        wl, get_band(band).effective_wavelength, zenith_distance_deg, weather
    )
    mean = w @ dr
    if n == 1:
        return mean[:, None], np.ones((mean.size, 1))
    scale = float(np.ptp(dr))
    if not scale > 0:
        raise ValueError("the light is not spread (zenith distance 0): use one component")
    # Stieltjes procedure with orthonormal polynomials, in centred and scaled units
    s = (dr[None, :] - mean[:, None]) / scale
    alpha = np.zeros((mean.size, n))
    beta = np.zeros((mean.size, n - 1))
    q_prev = np.zeros_like(s)
    q = np.ones_like(s)
    for k in range(n):
        alpha[:, k] = np.sum(w * s * q * q, axis=1)
        if k == n - 1:
            break
        r = (s - alpha[:, k, None]) * q - (beta[:, k - 1, None] * q_prev if k > 0 else 0.0)
        beta[:, k] = np.sqrt(np.sum(w * r * r, axis=1))
        q_prev, q = q, r / beta[:, k, None]
    jacobi = np.zeros((mean.size, n, n))
    idx = np.arange(n)
    jacobi[:, idx, idx] = alpha
    jacobi[:, idx[:-1], idx[1:]] = beta
    jacobi[:, idx[1:], idx[:-1]] = beta
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = vectors[:, 0, :] ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    return mean[:, None] + scale * nodes, weights


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
