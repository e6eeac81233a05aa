import numpy as np
import pytest

from tasks.images import Weather, get_band
from tasks.simulate.refraction import (
    differential_refraction,
    refraction,
    sed_dcr_shift,
    sed_subfilter_fractions,
)


def test_refraction_magnitude_and_colour_dependence():
    weather = Weather(10.0, 744.0, 40.0)
    r = refraction(np.array([400.0, 500.0, 700.0, 1000.0]), 45.0, weather)
    # ~ 58" * P/1013 hPa at sea level standard conditions for z = 45 deg
    assert 40 < r[1] < 46
    assert np.all(np.diff(r) < 0)  # blue light is refracted more
    assert refraction(500.0, 0.0, weather) == pytest.approx(0.0, abs=1e-9)
    # refraction scales with pressure
    thin = refraction(500.0, 45.0, Weather(10.0, 372.0, 40.0))
    assert thin == pytest.approx(r[1] / 2, rel=0.01)
    d = differential_refraction(np.array([400.0, 567.0]), 480.2, 45.0, weather)
    assert d[0] > 0 > d[1]


def test_sed_weighted_dcr_and_subfilter_fractions():
    weather = Weather()
    slopes = np.array([-2.0, 0.0, 2.0])
    shift = sed_dcr_shift("g", slopes, 50.0, weather)
    # a bluer source is displaced further toward the zenith
    assert shift[0] > shift[1] > shift[2]
    assert np.all(sed_dcr_shift("g", slopes, 0.0, weather) == 0)
    # a flat source's displacement is the band average of R(lambda) - R(lambda_eff)
    band = get_band("g")
    wl = np.linspace(band.wavelength_min, band.wavelength_max, 2001)
    mean = differential_refraction(wl, band.effective_wavelength, 50.0, weather).mean()
    assert shift[1] == pytest.approx(mean, abs=2e-4)
    frac = sed_subfilter_fractions("g", 3, np.array([-2.0, -1.0, 0.0, 2.0]))
    np.testing.assert_allclose(frac.sum(axis=1), 1.0)
    np.testing.assert_allclose(frac[2], 1 / 3)
    assert frac[0, 0] > frac[0, 2] and frac[3, 2] > frac[3, 0]
    # the slope -1 branch (log integral) is continuous with its neighbours
    near = sed_subfilter_fractions("g", 3, np.array([-1.0 + 1e-6]))
    np.testing.assert_allclose(near[0], frac[1], atol=1e-5)
