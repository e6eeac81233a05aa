"""Forced photometry on images from the survey simulator (tasks.simulate)."""

import numpy as np
import pandas as pd

from tasks.characterize.psf_model import PixelGridPsf
from tasks.forcedphot import ForcedPhotCcdFromDataFrameTask
from tasks.forcedphot.psf_flux import measure_psf_flux, psf_images_at
from tasks.images import Box2I, DoubleGaussianPsf
from tasks.simulate import render_sources


def test_simulator_rendering_and_forced_photometry_share_conventions(helpers, rng):
    """Noiseless simulator images, an offset bbox, its own PSF: fluxes exact to 1e-6."""
    psf = DoubleGaussianPsf(1.7, center=(1200, 300), scale=200, gradient=(0.1, 0.05))
    bbox = Box2I(1000, 100, 400, 400)
    x, y = helpers.grid_positions(400, 400, 45, 25, rng)
    x, y = x + bbox.x0, y + bbox.y0
    flux = 10 ** rng.uniform(3, 5, x.size)
    image = render_sources(bbox, psf, x, y, flux)
    res = measure_psf_flux(
        image, np.ones_like(image), None, (bbox.x0, bbox.y0), x, y, psf_images_at(psf, x, y)
    )
    assert np.max(np.abs(res.flux / flux - 1)) < 1e-6


def test_fitted_psf_measures_simulator_images(helpers, rng):
    """With a PixelGridPsf equal to the truth's kernel, forced fluxes on a simulator image."""
    true = DoubleGaussianPsf(1.7, kernel_size=25)
    kernel = true.compute_kernel_image(0.0, 0.0)
    coeffs = np.zeros((6, 25, 25))
    coeffs[0] = kernel
    model = PixelGridPsf(coeffs, (-0.5, -0.5, 299.5, 299.5), 2)
    x, y = helpers.grid_positions(300, 300, 30, 20, rng)
    flux = 10 ** rng.uniform(3, 5, x.size)
    bbox = Box2I(0, 0, 300, 300)
    image = render_sources(bbox, true, x, y, flux)
    exposure = helpers.make_exposure(image, np.full(image.shape, 1.0), model)
    ra, dec = exposure.pixel_to_sky(x, y)
    objects = pd.DataFrame({"diaObjectId": np.arange(x.size) + 1, "ra": ra, "dec": dec})
    out = ForcedPhotCcdFromDataFrameTask().measure_dia_objects(objects, exposure, exposure)
    order = out["diaObjectId"].to_numpy() - 1
    measured = out["scienceFlux"].to_numpy() / exposure.photo_calib.calibration_mean
    # the model is the truth's kernel shifted by Fourier interpolation: 1e-4 agreement
    assert np.max(np.abs(measured / flux[order] - 1)) < 1e-4
