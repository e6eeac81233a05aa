"""Synthetic exposures and catalogues with known truth for the alert tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from tasks.core.ids import make_ids
from tasks.images import Exposure, PhotoCalib, make_tan_wcs

CALIB = 2.5  # nJy per count
SIGMA_PSF = 2.0
VISIT, DETECTOR = 1234, 7
MJD = 60500.25


def gaussian_image(shape, positions, fluxes, sigma=SIGMA_PSF):
    """Pixel-integrated circular Gaussians (counts) on a zero background."""
    from scipy.special import erf

    height, width = shape
    image = np.zeros(shape)
    xs = np.arange(width)
    ys = np.arange(height)
    s2 = np.sqrt(2) * sigma
    for (x, y), flux in zip(positions, fluxes, strict=True):
        fx = 0.5 * (erf((xs + 0.5 - x) / s2) - erf((xs - 0.5 - x) / s2))
        fy = 0.5 * (erf((ys + 0.5 - y) / s2) - erf((ys - 0.5 - y) / s2))
        image += flux * np.outer(fy, fx)
    return image


@dataclass
class Scene:
    diffim: Exposure
    calexp: Exposure
    template: Exposure
    sources: pd.DataFrame
    objects: pd.DataFrame
    src_history: pd.DataFrame
    forced_history: pd.DataFrame
    ss_sources: pd.DataFrame
    truth_flux_njy: np.ndarray


def make_scene(size: int = 256, seed: int = 1, noise: float = 1.0) -> Scene:
    rng = np.random.default_rng(seed)
    wcs = make_tan_wcs(150.0, 2.0, (size / 2, size / 2), 0.2, rotation_deg=30.0)
    # sources: interior ones, one near the left edge (partial cutout), one SSO
    pos = [(60.3, 70.8), (128.0, 128.0), (190.6, 40.2), (5.2, 150.4), (100.5, 220.7)]
    flux_counts = np.array([4000.0, 2500.0, 6000.0, 3000.0, 5000.0])
    shape = (size, size)
    diff = gaussian_image(shape, pos, flux_counts) + rng.normal(0, noise, shape)
    star = gaussian_image(shape, [(30.0, 30.0)], [20000.0])
    calexp_img = diff + star + 100.0
    template_img = star + 100.0 + rng.normal(0, noise / 2, shape)
    var = np.full(shape, noise**2)
    calib = PhotoCalib(CALIB)

    def exposure(img):
        return Exposure(
            img.astype(np.float32),
            None,
            var.astype(np.float32),
            wcs,
            photo_calib=calib,
            detector=DETECTOR,
        )

    diffim, calexp, template = exposure(diff), exposure(calexp_img), exposure(template_img)
    n = len(pos)
    x = np.array([p[0] for p in pos])
    y = np.array([p[1] for p in pos])
    ra, dec = diffim.pixel_to_sky(x, y)
    ids = make_ids(VISIT, DETECTOR, n)
    object_ids = ids.copy()
    object_ids[1] = make_ids(1000, DETECTOR, 1)[0]  # an object seen before
    object_ids[4] = 0  # the SSO source has no DiaObject
    sources = pd.DataFrame(
        {
            "diaSourceId": ids,
            "visit": VISIT,
            "detector": DETECTOR,
            "diaObjectId": pd.array(
                [oid if oid else None for oid in object_ids.tolist()], dtype="Int64"
            ),
            "ssObjectId": pd.array([None, None, None, None, 42], dtype="Int64"),
            "midpointMjdTai": MJD,
            "ra": ra,
            "dec": dec,
            "raErr": 1e-5,
            "decErr": 1e-5,
            "x": x,
            "y": y,
            "psfFlux": flux_counts * CALIB,
            "psfFluxErr": np.full(n, 30.0),
            "scienceFlux": flux_counts * CALIB + 10.0,
            "scienceFluxErr": np.full(n, 35.0),
            "snr": flux_counts * CALIB / 30.0,
            "bboxSize": [12, 40, 200, 20, 16],
            "band": "r",
            "isDipole": False,
            "pixelFlags_edge": [False, False, False, True, False],
            "psfNdata": 0,
            "pixelId": np.arange(n),  # an APDB column the alert does not carry
        }
    )
    obj_ids = object_ids[object_ids != 0]
    objects = pd.DataFrame(
        {
            "diaObjectId": obj_ids,
            "validityStartMjdTai": MJD,
            "ra": ra[object_ids != 0],
            "dec": dec[object_ids != 0],
            "nDiaSources": [1, 3, 1, 1],
            "r_psfFluxMean": [1.0, 2.0, np.nan, 4.0],
            "r_psfFluxNdata": [1, 3, 1, 1],
        }
    )
    old_ids = make_ids(1000, DETECTOR, 3)
    src_history = pd.DataFrame(
        {
            "diaSourceId": np.r_[old_ids[:2], ids[1]],  # includes the current source: dropped
            "visit": [1000, 1100, VISIT],
            "detector": DETECTOR,
            "diaObjectId": object_ids[1],
            "midpointMjdTai": [MJD - 10, MJD - 20, MJD],
            "ra": ra[1],
            "dec": dec[1],
            "x": 128.0,
            "y": 128.0,
            "psfFlux": [100.0, 200.0, 300.0],
            "bboxSize": 20,
            "band": ["g", "r", "r"],
            "timeProcessedMjdTai": MJD - 5,
        }
    )
    forced_history = pd.DataFrame(
        {
            "diaForcedSourceId": make_ids(1000, DETECTOR, 3),
            "diaObjectId": object_ids[1],
            "ra": ra[1],
            "dec": dec[1],
            "visit": [1000, 1100, VISIT],
            "detector": DETECTOR,
            "midpointMjdTai": [MJD - 10, MJD - 20, MJD],
            "psfFlux": [1.0, np.nan, 3.0],
            "band": "r",
            "timeProcessedMjdTai": MJD - 5,
        }
    )
    ss_sources = pd.DataFrame({"diaSourceId": [ids[4]], "ssObjectId": [42]})
    return Scene(
        diffim,
        calexp,
        template,
        sources,
        objects,
        src_history,
        forced_history,
        ss_sources,
        flux_counts * CALIB,
    )


@pytest.fixture
def scene() -> Scene:
    return make_scene()
