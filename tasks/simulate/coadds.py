"""Deep coadds of the static sky: DCR sub-filter coadds and the broadband coadd per patch.

A sub-filter coadd holds, for each static (and variable, at its mean) star,
the fraction of its band flux that falls in the sub-filter's slice of the
band (from its spectral slope), at its true position (no refraction: the DCR
model describes the sky at the zenith).  Images are in nJy (``PhotoCalib(1)``)
with a narrow Gaussian PSF.  Each sub-filter gets independent Gaussian noise
of variance ``σ² / n``; the broadband coadd is rendered separately from the
band fluxes and carries the sum of the sub-filter noise, so the sub-filter
coadds add up to the broadband coadd (to float rounding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.core.base import Struct
from tasks.data.skymap import PatchInfo
from tasks.images.calib import PhotoCalib
from tasks.images.exposure import Exposure
from tasks.images.psf import GaussianPsf
from tasks.simulate.config import SimulationConfig
from tasks.simulate.refraction import sed_subfilter_fractions
from tasks.simulate.render import render_sources
from tasks.simulate.sources import mean_fluxes

__all__ = ["coadd_psf", "coadd_noise_sigma", "render_patch_coadds"]


def coadd_psf(config: SimulationConfig) -> GaussianPsf:
    """Return the PSF of the simulated coadds."""
    return GaussianPsf(config.coadd_seeing / 2.3548 / config.pixel_scale)


def coadd_noise_sigma(config: SimulationConfig, band: str) -> float:
    """Per-pixel noise (nJy) of a broadband coadd."""
    single = (config.sky[band] + config.read_noise**2) * config.calibration**2
    return float(np.sqrt(single / config.coadd_depth))


def render_patch_coadds(
    objects: pd.DataFrame,
    patch: PatchInfo,
    band: str,
    config: SimulationConfig,
    rng: np.random.Generator,
) -> Struct:
    """Render the sub-filter coadds and the broadband coadd of one patch.

    Returns
    -------
    result : `tasks.core.base.Struct`
        ``subfilters`` (list of `Exposure`, bluest first), ``deep``
        (`Exposure`), ``model`` (noiseless broadband image, nJy).
    """
    bbox = patch.outer_bbox
    psf = coadd_psf(config)
    flux = mean_fluxes(objects, band)
    keep = flux > 0
    x, y = patch.wcs.wcs_world2pix(
        objects["ra"].to_numpy()[keep], objects["dec"].to_numpy()[keep], 0
    )
    flux = flux[keep]
    fractions = sed_subfilter_fractions(
        band, config.n_subfilters, objects["sedSlope"].to_numpy()[keep]
    )
    sigma = coadd_noise_sigma(config, band)
    n = config.n_subfilters
    sub_sigma = sigma / np.sqrt(n)
    calib = PhotoCalib(1.0)
    noise_sum = np.zeros(bbox.shape)
    subfilters = []
    for k in range(n):
        model = render_sources(bbox, psf, x, y, flux * fractions[:, k])
        noise = rng.normal(0.0, sub_sigma, bbox.shape)
        noise_sum += noise
        subfilters.append(
            Exposure(
                (model + noise).astype(np.float32),
                None,
                np.full(bbox.shape, sub_sigma**2, dtype=np.float32),
                patch.wcs,
                bbox,
                psf=psf,
                photo_calib=calib,
                band=band,
            )
        )
    model = render_sources(bbox, psf, x, y, flux)
    deep = Exposure(
        (model + noise_sum).astype(np.float32),
        None,
        np.full(bbox.shape, sigma**2, dtype=np.float32),
        patch.wcs,
        bbox,
        psf=psf,
        photo_calib=calib,
        band=band,
    )
    return Struct(subfilters=subfilters, deep=deep, model=model)
