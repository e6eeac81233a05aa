"""Stone (1996) refraction against pyerfa's independent refco model."""

import erfa
import numpy as np
import pytest

from tasks.core.base import TaskError
from tasks.dcr.errors import DcrError, WavelengthRangeError
from tasks.dcr.refraction import (
    default_weather,
    differential_refraction,
    refraction,
    refractive_index_minus_one,
)

WEATHERS = [
    # temperature C, pressure hPa, humidity %
    (10.0, 744.0, 20.0),  # a 2.7 km site (Cerro Pachon-like)
    (-5.0, 600.0, 5.0),
    (25.0, 1013.25, 80.0),
]


def erfa_refraction_arcsec(wavelength_nm, zenith_deg, temperature, pressure, humidity):
    refa, refb = erfa.refco(pressure, temperature, humidity / 100.0, wavelength_nm / 1000.0)
    tan_z = np.tan(np.radians(zenith_deg))
    return np.degrees(refa * tan_z + refb * tan_z**3) * 3600.0


@pytest.mark.parametrize("weather", WEATHERS)
@pytest.mark.parametrize("zenith", [20.0, 45.0, 65.0])
def test_differential_refraction_matches_erfa(weather, zenith):
    temperature, pressure, humidity = weather
    # g through y: sub-filter centres relative to the band's effective wavelength
    reference = 620.0
    wavelengths = np.array([410.0, 470.0, 540.0, 700.0, 800.0, 870.0, 960.0])
    ours = differential_refraction(
        wavelengths,
        reference,
        zenith,
        temperature=temperature,
        pressure=pressure,
        humidity=humidity,
        latitude_deg=-30.24,
        altitude_m=0.0,
    )
    theirs = erfa_refraction_arcsec(
        wavelengths, zenith, temperature, pressure, humidity
    ) - erfa_refraction_arcsec(reference, zenith, temperature, pressure, humidity)
    np.testing.assert_allclose(ours, theirs, rtol=0.01)
    # and the absolute refraction agrees to the same level
    np.testing.assert_allclose(
        refraction(
            wavelengths,
            zenith,
            temperature=temperature,
            pressure=pressure,
            humidity=humidity,
            latitude_deg=-30.24,
        ),
        erfa_refraction_arcsec(wavelengths, zenith, temperature, pressure, humidity),
        rtol=0.01,
    )


def test_u_band_differential_refraction_close_to_erfa():
    # erfa's dispersion is a two-term approximation that parts from the
    # Owens/Edlen dispersion by ~2.5 % in the near UV (see the Edlen test below,
    # which our formula passes), so the u-band tolerance is wider.
    wavelengths = np.array([330.0, 350.0, 380.0])
    ours = differential_refraction(
        wavelengths, 367.0, 50.0, temperature=10.0, pressure=744.0, humidity=20.0
    )
    theirs = erfa_refraction_arcsec(wavelengths, 50.0, 10.0, 744.0, 20.0) - erfa_refraction_arcsec(
        367.0, 50.0, 10.0, 744.0, 20.0
    )
    np.testing.assert_allclose(ours, theirs, rtol=0.03)


def test_dispersion_of_standard_air_matches_edlen():
    # Edlen (1966) dispersion of dry standard air (15 C, 1013.25 hPa), sigma in 1/micron
    def edlen(wavelength_nm):
        s2 = (1000.0 / wavelength_nm) ** 2
        return (8342.13 + 2406030.0 / (130.0 - s2) + 15997.0 / (38.9 - s2)) * 1e-8

    weather = default_weather(0.0)._replace(humidity=0.0)
    wavelengths = np.array([330.0, 350.0, 400.0, 500.0, 700.0, 1000.0])
    ours = refractive_index_minus_one(wavelengths, weather)
    np.testing.assert_allclose(ours - ours[-1], edlen(wavelengths) - edlen(1000.0), rtol=0.003)


def test_zero_at_zenith_and_grows_with_zenith_distance():
    assert refraction(500.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert differential_refraction(400.0, 600.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    values = refraction(500.0, np.linspace(0.0, 80.0, 17))
    assert np.all(np.diff(values) > 0)


def test_monotonic_in_wavelength():
    wavelengths = np.linspace(300.0, 2000.0, 200)
    values = refraction(wavelengths, 60.0, temperature=5.0, pressure=750.0, humidity=30.0)
    assert np.all(np.diff(values) < 0), "bluer light must be refracted more"
    # about 60 arcsec at z=60 for a high site, 1.7 arcsec of dispersion across g
    assert 50.0 < values[0] < 90.0


def test_refractive_index_of_standard_air():
    # n - 1 of dry air at 15 C, 1013.25 hPa, 589 nm is 2.77e-4 (Edlen, Ciddor)
    weather = default_weather(0.0)._replace(humidity=0.0)
    assert refractive_index_minus_one(589.0, weather) == pytest.approx(2.77e-4, rel=0.005)


def test_default_weather_from_altitude():
    sea = default_weather(0.0)
    site = default_weather(2663.0)
    assert sea.pressure == pytest.approx(1013.25)
    assert site.pressure == pytest.approx(735.0, rel=0.01)
    assert site.temperature == pytest.approx(15.0 - 6.5 * 2.663)
    # missing weather is taken from the altitude, so refraction drops with altitude
    high = refraction(500.0, 45.0, altitude_m=2663.0)
    explicit = refraction(
        500.0,
        45.0,
        temperature=site.temperature,
        pressure=site.pressure,
        humidity=site.humidity,
        altitude_m=2663.0,
    )
    assert high == pytest.approx(explicit)
    assert high < refraction(500.0, 45.0, altitude_m=0.0)
    # NaN weather counts as missing
    assert refraction(500.0, 45.0, temperature=float("nan"), altitude_m=2663.0) == pytest.approx(
        high
    )


@pytest.mark.parametrize("wavelength", [100.0, 229.0, 2100.0, float("nan")])
def test_wavelength_out_of_range_is_an_error(wavelength):
    with pytest.raises(WavelengthRangeError, match="validity range"):
        refraction(np.array([500.0, wavelength]), 30.0)
    assert issubclass(WavelengthRangeError, TaskError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zenith_distance_deg": 95.0},
        {"zenith_distance_deg": -1.0},
        {"zenith_distance_deg": 30.0, "humidity": 150.0},
        {"zenith_distance_deg": 30.0, "pressure": -3.0},
    ],
)
def test_bad_geometry_or_weather_is_an_error(kwargs):
    with pytest.raises(DcrError):
        refraction(500.0, **kwargs)
