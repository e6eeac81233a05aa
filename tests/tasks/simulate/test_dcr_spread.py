"""DCR-spread rendering: each source drawn as sub-band components along the zenith."""

import erfa
import numpy as np
import pytest

from tasks.images import Box2I, DoubleGaussianPsf, GaussianPsf, Psf, Weather, get_band
from tasks.simulate.chromatic import (
    DcrComponents,
    dcr_components,
    n_dcr_components,
    smallest_psf_width,
)
from tasks.simulate.refraction import sed_dcr_components, sed_dcr_shift
from tasks.simulate.render import render_sources

WEATHER = Weather(8.0, 744.0, 30.0)
PIXEL_SCALE = 0.2
ANGLE = np.radians(35.0)
DIRECTION = (float(np.cos(ANGLE)), float(np.sin(ANGLE)))


def erfa_refraction(wavelength_nm, zenith_deg):
    """Refraction (arcsec) straight from ERFA's refraction constants."""
    w = WEATHER
    refa, refb = erfa.refco(w.pressure, w.temperature, w.humidity / 100, wavelength_nm / 1000)
    tz = np.tan(np.radians(zenith_deg))
    return np.degrees(refa * tz + refb * tz**3) * 3600


def dense_dcr_moments(band, slope, zenith_deg, n=20001):
    """Mean and variance (arcsec, arcsec²) of a power-law SED's refraction, straight from ERFA.

    A midpoint sum over ``n`` wavelengths of ``R(λ) - R(λ_eff)`` weighted by
    ``(λ / λ_eff)**slope``, independent of the simulator's quadrature.
    """
    b = get_band(band)
    wl = b.wavelength_min + (np.arange(n) + 0.5) / n * b.bandwidth
    r = erfa_refraction(wl, zenith_deg) - erfa_refraction(b.effective_wavelength, zenith_deg)
    w = (wl / b.effective_wavelength) ** slope
    w /= w.sum()
    mean = np.sum(w * r)
    return mean, np.sum(w * (r - mean) ** 2)


def moments(image):
    """Flux, centroid and second-moment tensor of an image."""
    yy, xx = np.indices(image.shape, dtype=float)
    total = image.sum()
    cx, cy = (image * xx).sum() / total, (image * yy).sum() / total
    dx, dy = xx - cx, yy - cy
    q = [(image * a * b).sum() / total for a, b in ((dx, dx), (dy, dy), (dx, dy))]
    return total, cx, cy, np.array(q)


def along(q, u):
    """Second moments (along u, across u, cross) from (qxx, qyy, qxy)."""
    ux, uy = u
    qxx, qyy, qxy = q
    quu = ux * ux * qxx + uy * uy * qyy + 2 * ux * uy * qxy
    qvv = uy * uy * qxx + ux * ux * qyy - 2 * ux * uy * qxy
    quv = ux * uy * (qyy - qxx) + (ux * ux - uy * uy) * qxy
    return quu, qvv, quv


def test_components_reproduce_the_sed_moments_computed_independently():
    slopes = np.array([-2.5, -1.0, 0.0, 1.3, 2.5])
    for n in (2, 4, 8):
        shifts, weights = sed_dcr_components("g", slopes, 55.0, WEATHER, n)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(weights > 0) and np.all(np.diff(shifts, axis=1) > 0)
        mean = np.sum(weights * shifts, axis=1)
        var = np.sum(weights * (shifts - mean[:, None]) ** 2, axis=1)
        np.testing.assert_allclose(mean, sed_dcr_shift("g", slopes, 55.0, WEATHER), atol=1e-12)
        for k, slope in enumerate(slopes):
            m, v = dense_dcr_moments("g", slope, 55.0)
            assert mean[k] == pytest.approx(m, abs=1e-6)
            assert var[k] == pytest.approx(v, rel=1e-5)
    # bluer sources are spread further
    assert var[0] > var[-1]
    one_shift, one_weight = sed_dcr_components("g", slopes, 55.0, WEATHER, 1)
    np.testing.assert_allclose(one_shift[:, 0], sed_dcr_shift("g", slopes, 55.0, WEATHER))
    np.testing.assert_array_equal(one_weight, 1.0)
    with pytest.raises(ValueError, match="not spread"):
        sed_dcr_components("g", slopes, 0.0, WEATHER, 3)
    with pytest.raises(ValueError, match="n_components"):
        sed_dcr_components("g", slopes, 30.0, WEATHER, 0)


@pytest.mark.parametrize("slope", [-2.0, 0.0, 2.5])
def test_bright_star_is_spread_along_the_zenith_by_its_sed(slope):
    bbox = Box2I(0, 0, 161, 161)
    psf = DoubleGaussianPsf(1.8)
    x0, y0, flux = 80.3, 79.6, 1e6
    zenith = 50.0  # airmass 1.56, g band: the light spreads over ~5 px
    sigma = smallest_psf_width(psf, bbox)
    comps = dcr_components("g", np.array([slope]), zenith, WEATHER, DIRECTION, PIXEL_SCALE, sigma)
    assert comps.n_components > 3
    # the simulator draws the star around its mean DCR position
    mean_px = sed_dcr_shift("g", np.array([slope]), zenith, WEATHER)[0] / PIXEL_SCALE
    xm, ym = x0 + mean_px * DIRECTION[0], y0 + mean_px * DIRECTION[1]
    star = render_sources(bbox, psf, [xm], [ym], [flux], components=comps)
    mean, var = dense_dcr_moments("g", slope, zenith)
    shift = mean / PIXEL_SCALE
    # the same star drawn as one PSF at its mean DCR position
    single = render_sources(bbox, psf, [xm], [ym], [flux])
    f_star, cx, cy, q_star = moments(star)
    f_single, sx, sy, q_single = moments(single)
    assert f_star == pytest.approx(flux, rel=1e-9) and f_single == pytest.approx(flux, rel=1e-9)
    # centroid: the flux-weighted mean DCR position
    assert cx == pytest.approx(x0 + shift * DIRECTION[0], abs=2e-4)
    assert cy == pytest.approx(y0 + shift * DIRECTION[1], abs=2e-4)
    # along the zenith the second moment grows by the SED's DCR variance; across it, nothing
    uu, vv, uv = along(q_star, DIRECTION)
    uu1, vv1, uv1 = along(q_single, DIRECTION)
    assert uu - uu1 == pytest.approx(var / PIXEL_SCALE**2, rel=2e-4)
    assert var / PIXEL_SCALE**2 > 0.5
    assert vv == pytest.approx(vv1, abs=1e-4)
    assert uv == pytest.approx(uv1, abs=1e-4)


def test_at_the_zenith_a_star_is_the_single_component_render():
    bbox = Box2I(0, 0, 81, 71)
    psf = DoubleGaussianPsf(1.6, center=(40, 35), scale=40, gradient=(0.05, 0.02))
    x, y = np.array([40.2, 10.7, 79.5]), np.array([30.4, 60.1, 2.0])
    flux = np.array([1e5, 3e3, 7e4])
    slopes = np.array([-2.0, 0.5, 2.0])
    comps = dcr_components("g", slopes, 0.0, WEATHER, DIRECTION, PIXEL_SCALE, 1.6)
    assert comps.n_components == 1
    np.testing.assert_array_equal(comps.dx, 0.0)
    plain = render_sources(bbox, psf, x, y, flux)
    np.testing.assert_array_equal(render_sources(bbox, psf, x, y, flux, components=comps), plain)
    # a red band close to the zenith: the spread is negligible, one component
    assert dcr_components("y", slopes, 1.0, WEATHER, DIRECTION, PIXEL_SCALE, 1.6).n_components == 1


@pytest.mark.parametrize("zenith,tolerance", [(35.0, 1e-5), (60.0, 1e-5), (60.0, 1e-3)])
def test_discretisation_error_is_within_tolerance(zenith, tolerance):
    """Against a dense reference: 2,000 sub-bands, each the PSF at its own refraction."""
    bbox = Box2I(0, 0, 101, 101)
    psf = DoubleGaussianPsf(1.4)
    x0, y0, flux, slope = 50.4, 49.8, 1.0, -1.5
    comps = dcr_components(
        "g", np.array([slope]), zenith, WEATHER, DIRECTION, PIXEL_SCALE, 1.4, tolerance
    )
    b = get_band("g")
    n = 2000
    wl = b.wavelength_min + (np.arange(n) + 0.5) / n * b.bandwidth
    r = erfa_refraction(wl, zenith)
    w = (wl / b.effective_wavelength) ** slope
    w /= w.sum()
    offset = (r - np.sum(w * r)) / PIXEL_SCALE
    dense = render_sources(
        bbox, psf, x0 + offset * DIRECTION[0], y0 + offset * DIRECTION[1], flux * w
    )
    image = render_sources(bbox, psf, [x0], [y0], [flux], components=comps)
    peak = render_sources(bbox, psf, [x0], [y0], [flux]).max()
    error = np.abs(image - dense).max() / peak
    print(f"z={zenith}: {comps.n_components} components, max error {error:.1e} of the peak")
    assert error < tolerance
    # one component (the mean position alone) would be far off
    assert np.abs(render_sources(bbox, psf, [x0], [y0], [flux]) - dense).max() / peak > 0.05


def test_more_components_for_more_spread_or_tighter_tolerance():
    assert n_dcr_components(0.0, 1.5) == 1
    counts = [n_dcr_components(spread, 1.5) for spread in (0.01, 0.5, 2.0, 5.0, 10.0)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] > counts[1]
    assert n_dcr_components(5.0, 1.5, 1e-8) > n_dcr_components(5.0, 1.5, 1e-3)


class _OpaquePsf(Psf):
    """A PSF the renderer cannot separate: it delegates to a double Gaussian."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def kernel_size(self):
        return self.inner.kernel_size

    def compute_kernel_image(self, x, y):
        return self.inner.compute_kernel_image(x, y)

    def compute_shape(self, x, y):
        return self.inner.compute_shape(x, y)

    def compute_images(self, x, y):
        return self.inner.compute_images(x, y)


@pytest.mark.parametrize(
    "psf",
    [DoubleGaussianPsf(1.7, center=(60, 40), scale=60, gradient=(0.1, -0.05)), GaussianPsf(1.5)],
)
def test_grown_stamps_equal_one_psf_stamp_per_component(psf):
    bbox = Box2I(-5, 7, 150, 110)
    rng = np.random.default_rng(3)
    n = 150
    x, y = rng.uniform(-20, 160, n), rng.uniform(-10, 130, n)  # some hang over the edges
    flux = rng.uniform(1, 100, n)
    comps = dcr_components(
        "u", rng.uniform(-2.5, 2.5, n), 58.0, WEATHER, DIRECTION, PIXEL_SCALE, 1.5
    )
    assert comps.n_components > 3
    grown = render_sources(bbox, psf, x, y, flux, components=comps)
    generic = render_sources(bbox, _OpaquePsf(psf), x, y, flux, components=comps)
    np.testing.assert_allclose(grown, generic, rtol=0, atol=1e-12 * grown.max())


def test_components_must_match_the_sources():
    bbox = Box2I(0, 0, 20, 20)
    comps = DcrComponents(np.zeros((2, 3)), np.zeros((2, 3)), np.full((2, 3), 1 / 3))
    with pytest.raises(Exception, match="component rows"):
        render_sources(bbox, GaussianPsf(1.0), [5.0], [5.0], [1.0], components=comps)
    with pytest.raises(Exception, match="shape"):
        DcrComponents(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3)))
    with pytest.raises(Exception, match="finite"):
        DcrComponents(np.full((1, 2), np.nan), np.zeros((1, 2)), np.ones((1, 2)))
