"""Cross-check of the forced PSF fluxes against photutils' PSFPhotometry."""

import numpy as np
import pytest
from astropy.table import Table

from tasks.forcedphot.psf_flux import measure_psf_flux, psf_images_at
from tasks.images import GaussianPsf

psf_module = pytest.importorskip("photutils.psf")


def test_fixed_position_fluxes_match_photutils(helpers, rng):
    sigma = 1.5
    psf = GaussianPsf(sigma)
    size = psf.kernel_size
    x, y = helpers.grid_positions(220, 220, 25, 15, rng)
    flux = 10 ** rng.uniform(2.5, 4.5, x.size)
    truth = helpers.render_stars((220, 220), psf, x, y, flux)
    sky_var = 40.0
    image = truth + rng.normal(size=truth.shape) * np.sqrt(sky_var)
    variance = np.full(image.shape, sky_var)

    ours = measure_psf_flux(image, variance, None, (0, 0), x, y, psf_images_at(psf, x, y))

    model = psf_module.CircularGaussianPRF(fwhm=sigma * 2 * np.sqrt(2 * np.log(2)))
    model.x_0.fixed = True
    model.y_0.fixed = True
    phot = psf_module.PSFPhotometry(model, (size, size))
    init = Table({"x": x, "y": y, "flux": flux})
    result = phot(image, error=np.sqrt(variance), init_params=init)
    theirs = np.asarray(result["flux_fit"])
    theirs_err = np.asarray(result["flux_err"])

    assert np.allclose(np.asarray(result["x_fit"]), x)
    # same model, same pixels, constant variance: the same linear least-squares answer
    assert np.max(np.abs(ours.flux - theirs) / ours.flux_err) < 0.01
    assert np.allclose(ours.flux_err, theirs_err, rtol=0.02)
