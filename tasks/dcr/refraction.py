"""Atmospheric refraction as a function of wavelength (Stone 1996).

The refraction angle of a source at zenith distance ``z`` follows
Stone (1996, PASP 108, 1051), eq. 4::

    R = kappa (n0 - 1) (1 - beta) tan z - kappa (n0 - 1) (beta - (n0 - 1) / 2) tan^3 z

with ``beta = H / r0 = 4.5908e-6 T`` the ratio of the atmospheric scale height to
the Earth's radius (``T`` in K), ``kappa`` the ratio of local gravity to its
value at latitude 45 degrees at sea level (Stone eq. 10) and ``n0`` the
refractive index of air at the observer, computed with the dispersion formula
of Owens (1967, Applied Optics 6, 51) for dry air and water vapour (the form
quoted by Stone, eqs. 12-16, wave number in inverse microns).  Owens' formula
is valid in the optical and near infrared; we refuse wavelengths outside
230-2059 nm with `WavelengthRangeError`.

Missing weather values default to a standard atmosphere at the site altitude
(`default_weather`).  Everything is vectorised over wavelength and zenith
distance.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tasks.dcr.errors import DcrError, WavelengthRangeError

__all__ = [
    "MIN_WAVELENGTH_NM",
    "MAX_WAVELENGTH_NM",
    "Atmosphere",
    "default_weather",
    "refractive_index_minus_one",
    "refraction",
    "differential_refraction",
]

MIN_WAVELENGTH_NM = 230.0
"""Shortest wavelength (nm) at which the Owens/Stone formula is used."""
MAX_WAVELENGTH_NM = 2059.0
"""Longest wavelength (nm) at which the Owens/Stone formula is used."""

_MAX_ZENITH_DEG = 85.0
_KELVIN = 273.15


class Atmosphere(NamedTuple):
    """Weather at the observer.

    Attributes
    ----------
    temperature : `float`
        Air temperature, degrees Celsius.
    pressure : `float`
        Air pressure, hPa (mbar).
    humidity : `float`
        Relative humidity, percent (0-100).
    """

    temperature: float
    pressure: float
    humidity: float


def default_weather(altitude_m: float) -> Atmosphere:
    """Return a standard atmosphere at a site altitude.

    The temperature and pressure follow the International Standard
    Atmosphere (15 C and 1013.25 hPa at sea level, lapse rate 6.5 K/km); the
    relative humidity is 40 %.

    Parameters
    ----------
    altitude_m : `float`
        Height of the site above sea level, metres.

    Returns
    -------
    weather : `Atmosphere`
    """
    altitude_m = float(altitude_m)
    if not np.isfinite(altitude_m) or not -500.0 <= altitude_m <= 11000.0:
        raise DcrError(f"site altitude {altitude_m} m is outside the troposphere model")
    temperature = 15.0 - 0.0065 * altitude_m
    pressure = 1013.25 * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588
    return Atmosphere(temperature=temperature, pressure=pressure, humidity=40.0)


def _complete_weather(
    temperature: float | None,
    pressure: float | None,
    humidity: float | None,
    altitude_m: float,
) -> Atmosphere:
    """Fill missing (None or NaN) weather values from the site altitude and check them."""

    def missing(value: float | None) -> bool:
        return value is None or not np.isfinite(value)

    if missing(temperature) or missing(pressure) or missing(humidity):
        default = default_weather(altitude_m)
        temperature = default.temperature if missing(temperature) else temperature
        pressure = default.pressure if missing(pressure) else pressure
        humidity = default.humidity if missing(humidity) else humidity
    weather = Atmosphere(float(temperature), float(pressure), float(humidity))
    if not -100.0 < weather.temperature < 100.0:
        raise DcrError(f"air temperature {weather.temperature} C is not plausible")
    if not 0.0 < weather.pressure < 1200.0:
        raise DcrError(f"air pressure {weather.pressure} hPa is not plausible")
    if not 0.0 <= weather.humidity <= 100.0:
        raise DcrError(f"relative humidity {weather.humidity} % is outside 0-100")
    return weather


def _check_wavelength(wavelength_nm: np.ndarray) -> None:
    bad = ~((wavelength_nm >= MIN_WAVELENGTH_NM) & (wavelength_nm <= MAX_WAVELENGTH_NM))
    if np.any(bad):
        raise WavelengthRangeError(
            f"wavelength(s) {np.unique(wavelength_nm[bad])} nm outside the validity range "
            f"{MIN_WAVELENGTH_NM}-{MAX_WAVELENGTH_NM} nm of the Stone (1996) refraction formula"
        )


def _water_vapour_pressure(weather: Atmosphere) -> float:
    """Partial pressure of water vapour (hPa) from the relative humidity.

    Saturation pressure over water from Buck (1981, J. Appl. Meteor. 20, 1527).
    """
    t = weather.temperature
    saturation = 6.1121 * np.exp((18.678 - t / 234.5) * (t / (257.14 + t)))
    return weather.humidity / 100.0 * saturation


def refractive_index_minus_one(
    wavelength_nm: np.ndarray | float, weather: Atmosphere
) -> np.ndarray:
    """Return ``n - 1`` of moist air (Owens 1967, as quoted by Stone 1996).

    Parameters
    ----------
    wavelength_nm : `float` or `numpy.ndarray`
        Wavelength(s) in vacuum, nm.
    weather : `Atmosphere`
        Temperature, pressure and humidity at the observer.

    Returns
    -------
    n_minus_one : `numpy.ndarray`
    """
    wavelength_nm = np.asarray(wavelength_nm, dtype=float)
    _check_wavelength(wavelength_nm)
    temp_k = weather.temperature + _KELVIN
    p_water = _water_vapour_pressure(weather)
    p_dry = weather.pressure - p_water
    # Density factors of dry air and water vapour (Owens 1967 eqs. 4 and 5).
    d_dry = (p_dry / temp_k) * (1.0 + p_dry * (57.90e-8 - 9.3250e-4 / temp_k + 0.25844 / temp_k**2))
    d_water = (p_water / temp_k) * (
        1.0
        + p_water
        * (1.0 + 3.7e-4 * p_water)
        * (-2.37321e-3 + 2.23366 / temp_k - 710.792 / temp_k**2 + 7.75141e4 / temp_k**3)
    )
    sigma2 = (1.0e3 / wavelength_nm) ** 2  # wave number squared, micron^-2
    dry_term = 2371.34 + 683939.7 / (130.0 - sigma2) + 4547.3 / (38.9 - sigma2)
    wet_term = 6487.31 + 58.058 * sigma2 - 0.71150 * sigma2**2 + 0.08851 * sigma2**3
    return (dry_term * d_dry + wet_term * d_water) * 1.0e-8


def refraction(
    wavelength_nm: np.ndarray | float,
    zenith_distance_deg: np.ndarray | float,
    *,
    temperature: float | None = None,
    pressure: float | None = None,
    humidity: float | None = None,
    latitude_deg: float = 45.0,
    altitude_m: float = 0.0,
) -> np.ndarray:
    """Return the refraction angle (arcsec) at a wavelength and zenith distance.

    Parameters
    ----------
    wavelength_nm : `float` or `numpy.ndarray`
        Wavelength(s), nm, within 230-2059 nm.
    zenith_distance_deg : `float` or `numpy.ndarray`
        Observed zenith distance(s), degrees, in ``[0, 85]``; broadcast against
        ``wavelength_nm``.
    temperature, pressure, humidity : `float`, optional
        Weather at the observer (C, hPa, percent).  Missing or NaN values take
        the `default_weather` of ``altitude_m``.
    latitude_deg : `float`, optional
        Geodetic latitude of the site.
    altitude_m : `float`, optional
        Height of the site above sea level, metres.

    Returns
    -------
    refraction : `numpy.ndarray`
        Refraction in arcsec; positive values raise the source towards the zenith.

    Raises
    ------
    WavelengthRangeError
        If a wavelength is outside the formula's range.
    DcrError
        If the zenith distance or the weather is out of range.
    """
    zenith = np.asarray(zenith_distance_deg, dtype=float)
    if np.any(~((zenith >= 0.0) & (zenith <= _MAX_ZENITH_DEG))):
        raise DcrError(f"zenith distance(s) {zenith} deg outside [0, {_MAX_ZENITH_DEG}]")
    weather = _complete_weather(temperature, pressure, humidity, altitude_m)
    n1 = refractive_index_minus_one(wavelength_nm, weather)
    beta = 4.5908e-6 * (weather.temperature + _KELVIN)
    lat = np.radians(latitude_deg)
    kappa = (
        1.0 + 0.005302 * np.sin(lat) ** 2 - 0.00000583 * np.sin(2.0 * lat) ** 2
    ) - 0.000000315 * altitude_m
    tan_z = np.tan(np.radians(zenith))
    result = kappa * n1 * (1.0 - beta) * tan_z - kappa * n1 * (beta - n1 / 2.0) * tan_z**3
    return np.degrees(result) * 3600.0


def differential_refraction(
    wavelength_nm: np.ndarray | float,
    reference_wavelength_nm: float,
    zenith_distance_deg: np.ndarray | float,
    **kwargs: float | None,
) -> np.ndarray:
    """Return refraction at ``wavelength_nm`` minus that at the reference (arcsec).

    Parameters
    ----------
    wavelength_nm : `float` or `numpy.ndarray`
        Wavelength(s), nm.
    reference_wavelength_nm : `float`
        Reference wavelength (for example the band's effective wavelength), nm.
    zenith_distance_deg : `float` or `numpy.ndarray`
        Zenith distance(s), degrees.
    **kwargs
        Weather and site keywords of `refraction`.

    Returns
    -------
    delta : `numpy.ndarray`
        Differential refraction, arcsec; positive (towards the zenith) for
        wavelengths bluer than the reference.
    """
    return refraction(wavelength_nm, zenith_distance_deg, **kwargs) - refraction(
        reference_wavelength_nm, zenith_distance_deg, **kwargs
    )
