"""Geometry of the simulated camera and survey: detectors, PSFs, calibration, sky map."""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS

from tasks.data.skymap import SkyMap, SkyMapConfig
from tasks.images.calib import PhotoCalib
from tasks.images.geom import Box2I
from tasks.images.psf import DoubleGaussianPsf
from tasks.images.visit_info import VisitInfo
from tasks.images.wcs_utils import make_tan_wcs
from tasks.simulate.config import SimulationConfig
from tasks.simulate.observing import PlannedVisit

__all__ = [
    "STREAMS",
    "seeded_rng",
    "detector_bbox",
    "detector_wcs",
    "detector_psf",
    "visit_calibration",
    "make_skymap",
]

STREAMS = {"plan": 0, "objects": 1, "ssp": 2, "coadds": 3, "psf": 4, "noise": 100, "defects": 101}
"""Independent random streams, so changing one part never changes the draws of another."""


def seeded_rng(config: SimulationConfig, *key: int) -> np.random.Generator:
    """Return the generator of stream ``key`` (e.g. ``(STREAMS["noise"], visit, detector)``)."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, *key]))


def detector_bbox(config: SimulationConfig) -> Box2I:
    """Box of every detector (its own parent coordinates)."""
    return Box2I(0, 0, *config.detector_size)


def _detector_offset(config: SimulationConfig, detector: int) -> float:
    width = config.detector_size[0]
    return (detector - (config.n_detectors - 1) / 2.0) * (width + config.detector_gap)


def detector_wcs(config: SimulationConfig, visit_info: VisitInfo, detector: int) -> WCS:
    """TAN WCS of a detector: detectors sit in a row along the focal-plane x axis."""
    width, height = config.detector_size
    crpix = ((width - 1) / 2.0 - _detector_offset(config, detector), (height - 1) / 2.0)
    return make_tan_wcs(
        visit_info.boresight_ra,
        visit_info.boresight_dec,
        crpix,
        config.pixel_scale,
        visit_info.rotator_angle,
    )


def detector_psf(
    config: SimulationConfig, planned: PlannedVisit, detector: int
) -> DoubleGaussianPsf:
    """PSF of a visit/detector: a double Gaussian whose width varies over the focal plane."""
    rng = seeded_rng(config, STREAMS["psf"], planned.visit_info.visit_id)
    angle = rng.uniform(0, 2 * np.pi)
    width, height = config.detector_size
    sigma = planned.seeing_fwhm / 2.3548 / config.pixel_scale
    g = config.psf_gradient
    return DoubleGaussianPsf(
        sigma,
        wing_ratio=2.0,
        wing_fraction=0.1,
        center=((width - 1) / 2.0 - _detector_offset(config, detector), (height - 1) / 2.0),
        scale=width / 2.0,
        gradient=(g * math.cos(angle), g * math.sin(angle)),
        curvature=g / 2.0 / max(1.0, config.n_detectors / 2.0) ** 2,
    )


def visit_calibration(config: SimulationConfig, visit_info: VisitInfo) -> PhotoCalib:
    """Calibration of a visit: extinction of 0.1 mag per airmass makes counts dearer."""
    mean = config.calibration * 10 ** (0.4 * 0.1 * (visit_info.airmass - 1.0))
    return PhotoCalib(mean, 0.005 * mean)


def make_skymap(config: SimulationConfig, footprints: list[tuple[np.ndarray, np.ndarray]]):
    """Build a one-tract sky map centred on the field that covers every footprint.

    Returns
    -------
    skymap : `SkyMap`
    coverage : `Box2I`
        Union of the footprints in tract pixel coordinates.
    """
    probe = SkyMap(
        SkyMapConfig(
            tract_centers=[(config.ra, config.dec)],
            num_patches=(1, 1),
            pixel_scale=config.pixel_scale,
            patch_inner_size=(1, 1),
            patch_border=0,
        )
    )[0]
    xs, ys = [], []
    for ra, dec in footprints:
        x, y = probe.wcs.wcs_world2pix(ra, dec, 0)
        xs.append(x - probe.bbox.center[0])
        ys.append(y - probe.bbox.center[1])
    half_x = float(np.max(np.abs(np.concatenate(xs)))) + 2
    half_y = float(np.max(np.abs(np.concatenate(ys)))) + 2
    if config.patch_inner_size is None:
        size = (int(math.ceil(half_x / 50.0) * 100), int(math.ceil(half_y / 50.0) * 100))
        num = (1, 1)
    else:
        size = config.patch_inner_size
        num = (int(math.ceil(2 * half_x / size[0])), int(math.ceil(2 * half_y / size[1])))
    skymap = SkyMap(
        SkyMapConfig(
            tract_centers=[(config.ra, config.dec)],
            pixel_scale=config.pixel_scale,
            patch_inner_size=size,
            patch_border=config.patch_border,
            num_patches=num,
        )
    )
    tract = skymap[0]
    cx, cy = tract.bbox.center
    coverage = Box2I.from_corners(
        int(math.floor(cx - half_x)),
        int(math.floor(cy - half_y)),
        int(math.ceil(cx + half_x)),
        int(math.ceil(cy + half_y)),
    )
    return skymap, coverage
