"""Helpers of the forced-photometry tests: stars rendered with a known PSF."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.time import Time

from tasks.images import Exposure, PhotoCalib, VisitInfo, make_tan_wcs
from tasks.images.psf import nearest_pixel


def render_stars(shape, psf, x, y, flux, origin=(0, 0)):
    """Noiseless image of point sources drawn with ``psf.compute_images``."""
    image = np.zeros(shape)
    stamps = psf.compute_images(x, y) * np.asarray(flux)[:, None, None]
    half = stamps.shape[1] // 2
    off = np.arange(-half, half + 1)
    iy = (nearest_pixel(y) - origin[1])[:, None, None] + off[None, :, None] + 0 * off[None, None, :]
    ix = (nearest_pixel(x) - origin[0])[:, None, None] + off[None, None, :] + 0 * off[None, :, None]
    ok = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(image, (iy[ok], ix[ok]), stamps[ok])
    return image


def grid_positions(width, height, spacing, margin, rng, jitter=0.5):
    """Jittered grid of positions (sub-pixel offsets uniform), isolated by ``spacing``."""
    gx = np.arange(margin, width - margin, spacing, dtype=float)
    gy = np.arange(margin, height - margin, spacing, dtype=float)
    xx, yy = np.meshgrid(gx, gy)
    x = xx.ravel() + rng.uniform(-jitter, jitter, xx.size)
    y = yy.ravel() + rng.uniform(-jitter, jitter, yy.size)
    return x, y


def make_exposure(image, variance, psf, visit=42, detector=7, band="r", calib=2.5):
    """An Exposure with a TAN WCS, visit info and a photometric calibration."""
    height, width = image.shape
    wcs = make_tan_wcs(150.0, 2.0, (width / 2, height / 2), 0.2)
    info = VisitInfo(
        visit_id=visit,
        exposure_time=30.0,
        midpoint=Time(60000.5, format="mjd", scale="tai"),
        band=band,
        boresight_ra=150.0,
        boresight_dec=2.0,
        boresight_az_alt=(0.0, 60.0),
        airmass=1.15,
        parallactic_angle=10.0,
        rotator_angle=0.0,
    )
    return Exposure(
        image.astype(np.float32),
        None,
        variance.astype(np.float32),
        wcs,
        psf=psf,
        photo_calib=PhotoCalib(calib),
        visit_info=info,
        detector=detector,
        band=band,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


class _Helpers:
    render_stars = staticmethod(render_stars)
    grid_positions = staticmethod(grid_positions)
    make_exposure = staticmethod(make_exposure)


@pytest.fixture
def helpers():
    """The rendering helpers of this module."""
    return _Helpers
