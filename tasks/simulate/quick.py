"""One-call helpers for tests: an exposure with known point sources, a plausible VisitInfo."""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.time import Time

from tasks.images.calib import PhotoCalib
from tasks.images.exposure import Exposure
from tasks.images.geom import Box2I
from tasks.images.psf import DoubleGaussianPsf, Psf
from tasks.images.visit_info import VisitInfo, Weather
from tasks.images.wcs_utils import make_tan_wcs
from tasks.simulate.render import render_exposure, render_sources

__all__ = ["make_exposure_with_sources", "make_visit_info"]


def make_visit_info(
    visit_id: int = 1,
    band: str = "r",
    mjd: float = 61000.25,
    ra: float = 150.0,
    dec: float = -25.0,
    airmass: float = 1.2,
    parallactic_angle: float = 30.0,
    rotator_angle: float = 0.0,
    exposure_time: float = 30.0,
    weather: Weather | None = None,
) -> VisitInfo:
    """Return a `VisitInfo` with the given airmass (altitude derived from sec z)."""
    altitude = float(np.degrees(np.arcsin(1.0 / airmass)))
    return VisitInfo(
        visit_id=visit_id,
        exposure_time=exposure_time,
        midpoint=Time(mjd, format="mjd", scale="tai"),
        band=band,
        boresight_ra=ra,
        boresight_dec=dec,
        boresight_az_alt=(90.0, altitude),
        airmass=airmass,
        parallactic_angle=parallactic_angle,
        rotator_angle=rotator_angle,
        weather=weather if weather is not None else Weather(),
    )


def make_exposure_with_sources(
    size: tuple[int, int] = (256, 256),
    n_sources: int = 50,
    seed: int = 0,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    flux: np.ndarray | None = None,
    flux_range: tuple[float, float] = (2e3, 2e5),
    psf: Psf | None = None,
    sky: float = 300.0,
    read_noise: float = 5.0,
    calibration: float = 3.0,
    noise: bool = True,
    visit_info: VisitInfo | None = None,
    detector: int = 0,
    origin: tuple[int, int] = (0, 0),
    margin: float = 10.0,
    rotation: float = 0.0,
) -> tuple[Exposure, pd.DataFrame]:
    """Return a single-visit exposure of point sources and the truth table.

    Parameters
    ----------
    size : `tuple` [`int`, `int`]
        ``(width, height)`` in pixels.
    n_sources : `int`
        Number of random sources (ignored when ``x``, ``y``, ``flux`` are given).
    seed : `int`
        Seed of positions, fluxes and noise.
    x, y, flux : `numpy.ndarray`, optional
        Explicit parent positions and fluxes (nJy).
    flux_range : `tuple` [`float`, `float`]
        Log-uniform range of random fluxes, nJy.
    psf : `Psf`, optional
        Default: a double Gaussian (sigma 1.6 px) varying by 5 % across the image.
    sky, read_noise, calibration : `float`
        Sky (counts/pixel), read noise (counts), nJy per count.
    noise : `bool`
        Add Poisson sky/source noise and read noise (else the image is the model,
        with the same variance plane).
    visit_info : `VisitInfo`, optional
        Default: `make_visit_info`.
    detector : `int`
        Detector id.
    origin : `tuple` [`int`, `int`]
        ``bbox`` origin.
    margin : `float`
        Keep random sources this far (pixels) from the edges.
    rotation : `float`
        Sky rotation angle of the WCS, deg.

    Returns
    -------
    exposure : `Exposure`
    truth : `pandas.DataFrame`
        ``objectId, x, y, ra, dec, flux`` (nJy), ``instFlux`` (counts).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    bbox = Box2I(origin[0], origin[1], width, height)
    if x is None or y is None or flux is None:
        x = rng.uniform(bbox.x0 + margin, bbox.x1 - margin, n_sources)
        y = rng.uniform(bbox.y0 + margin, bbox.y1 - margin, n_sources)
        flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n_sources))
    x, y, flux = (np.asarray(v, dtype=float) for v in (x, y, flux))
    if visit_info is None:
        visit_info = make_visit_info()
    if psf is None:
        cx, cy = bbox.center
        psf = DoubleGaussianPsf(
            1.6, center=(cx, cy), scale=max(width, height) / 2, gradient=(0.05, 0.03)
        )
    wcs = make_tan_wcs(
        visit_info.boresight_ra, visit_info.boresight_dec, bbox.center, 0.2, rotation
    )
    calib = PhotoCalib(calibration, 0.0)
    if noise:
        result = render_exposure(
            bbox,
            wcs,
            psf,
            x,
            y,
            flux,
            photo_calib=calib,
            sky=sky,
            read_noise=read_noise,
            rng=rng,
            visit_info=visit_info,
            detector=detector,
        )
        exposure = result.exposure
    else:
        model = render_sources(bbox, psf, x, y, calib.nanojansky_to_instflux(flux))
        variance = np.clip(model, 0, None) + sky + read_noise**2
        exposure = Exposure(
            model.astype(np.float32),
            None,
            variance.astype(np.float32),
            wcs,
            bbox,
            psf=psf,
            photo_calib=calib,
            visit_info=visit_info,
            detector=detector,
        )
    ra, dec = exposure.pixel_to_sky(x, y)
    truth = pd.DataFrame(
        {
            "objectId": np.arange(1, x.size + 1, dtype=np.int64),
            "x": x,
            "y": y,
            "ra": ra,
            "dec": dec,
            "flux": flux,
            "instFlux": calib.nanojansky_to_instflux(flux),
        }
    )
    return exposure, truth
