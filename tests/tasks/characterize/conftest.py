"""A simulated detector for the final-characterization tests.

Stars on a jittered grid (isolated), drawn with a double-Gaussian PSF whose
core width varies over the detector; isolated-star tables in the data-layout
format; a ``src`` table from the truth positions with a measured aperture flux.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from tasks.characterize.aperture import aperture_flux
from tasks.images import DoubleGaussianPsf, Exposure, PhotoCalib, VisitInfo, make_tan_wcs
from tasks.images.psf import nearest_pixel

SIZE = 640
VISIT = 1234
DETECTOR = 3


def render_stars(shape, psf, x, y, flux):
    image = np.zeros(shape)
    stamps = psf.compute_images(x, y) * np.asarray(flux)[:, None, None]
    half = stamps.shape[1] // 2
    off = np.arange(-half, half + 1)
    iy = nearest_pixel(y)[:, None, None] + off[None, :, None] + 0 * off[None, None, :]
    ix = nearest_pixel(x)[:, None, None] + off[None, None, :] + 0 * off[None, :, None]
    ok = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(image, (iy[ok], ix[ok]), stamps[ok])
    return image


def true_psf(size=SIZE):
    return DoubleGaussianPsf(
        1.7,
        wing_ratio=2.5,
        wing_fraction=0.15,
        center=(size / 2, size / 2),
        scale=size / 2,
        gradient=(0.12, -0.08),
        curvature=0.06,
    )


def make_scene(seed=5, size=SIZE, spacing=40, sky=100.0, noise=True, flux_range=(4.5, 6.0)):
    rng = np.random.default_rng(seed)
    psf = true_psf(size)
    g = np.arange(25, size - 24, spacing, dtype=float)
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel() + rng.uniform(-4, 4, gx.size)
    y = gy.ravel() + rng.uniform(-4, 4, gx.size)
    flux = 10 ** rng.uniform(*flux_range, x.size)
    truth = render_stars((size, size), psf, x, y, flux)
    variance = sky + truth
    image = truth + (rng.normal(size=truth.shape) * np.sqrt(variance) if noise else 0.0)
    wcs = make_tan_wcs(30.0, -10.0, (size / 2, size / 2), 0.2)
    info = VisitInfo(
        visit_id=VISIT,
        exposure_time=30.0,
        midpoint=Time(60100.25, format="mjd", scale="tai"),
        band="i",
        boresight_ra=30.0,
        boresight_dec=-10.0,
        boresight_az_alt=(10.0, 70.0),
        airmass=1.06,
        parallactic_angle=0.0,
        rotator_angle=0.0,
    )
    exposure = Exposure(
        image,
        None,
        variance,
        wcs,
        photo_calib=PhotoCalib(1.0),
        visit_info=info,
        detector=DETECTOR,
        band="i",
    )
    ap = aperture_flux(image, variance, None, (0, 0), x, y, 6.0)
    src = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "psfFlux": ap.flux,
            "psfFluxErr": ap.flux_err,
            "snr": ap.flux / ap.flux_err,
        }
    )
    ra, dec = exposure.pixel_to_sky(x, y)
    star_ids = np.arange(x.size) + 500
    stars = pd.DataFrame(
        {"isolated_star_id": star_ids, "ra": ra, "dec": dec, "nsource_i": 1, "nsource_g": 0}
    )
    sources = pd.DataFrame(
        {
            "isolated_star_id": star_ids,
            "obj_index": np.arange(x.size),
            "visit": VISIT,
            "detector": DETECTOR,
            "band": "i",
            "x": x,
            "y": y,
        }
    )
    return {
        "psf": psf,
        "x": x,
        "y": y,
        "flux": flux,
        "truth": truth,
        "exposure": exposure,
        "src": src,
        "stars": stars,
        "sources": sources,
        "sky": sky,
    }


@pytest.fixture(scope="module")
def scene():
    return make_scene()


@pytest.fixture
def scene_factory():
    return make_scene
