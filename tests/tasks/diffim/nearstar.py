"""A difference-imaging pair with transients next to bright stars (independent of `tasks.simulate`).

`make_pair` renders a deep, sharp template and a science image of the same
star field (Gaussian PSFs, so the matching kernel is exact), every star of
the science image displaced by a random registration shift (``shift_sigma``
pixels per axis).  Transients are injected at 2-6 pixels from stars of S/N
300-2,000 (the supernova-next-to-its-host case) and, as a control, far from
every star.  `detect_pair` subtracts and detects; `recovery` matches the
DiaSources to the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.time import Time

from tasks.diffim.detect import DetectAndMeasureTask
from tasks.diffim.evaluate import expected_change_snr
from tasks.diffim.subtract import SubtractImagesTask
from tasks.images import Box2I, Exposure, GaussianPsf, PhotoCalib, VisitInfo, make_tan_wcs
from tasks.simulate.render import add_noise, render_sources

SKY = 200.0
READ = 5.0
SCI_SIGMA = 1.9
TMPL_SIGMA = 1.2
BORDER = 20


@dataclass
class Pair:
    """Truth and images of one pair."""

    template: Exposure
    science: Exposure
    star_x: np.ndarray
    star_y: np.ndarray
    star_snr: np.ndarray
    x: np.ndarray  # transients
    y: np.ndarray
    flux: np.ndarray
    host_distance: np.ndarray  # px from the host star (NaN: isolated)
    host_snr: np.ndarray  # S/N of the host star (NaN: isolated)


def deep_template(
    rng: np.random.Generator,
    tbox: Box2I,
    wcs,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    sigma: float = TMPL_SIGMA,
) -> Exposure:
    """A deep (30 exposures' worth of sky noise), sharp Gaussian-PSF template."""
    tmpl = render_sources(tbox, GaussianPsf(sigma), x, y, flux)
    tvar = (SKY + READ**2) / 30.0
    tmpl = tmpl + rng.normal(0.0, np.sqrt(tvar), tmpl.shape)
    return Exposure(
        tmpl.astype(np.float32),
        None,
        np.full(tbox.shape, tvar, np.float32),
        wcs,
        tbox,
        psf=GaussianPsf(sigma),
        photo_calib=PhotoCalib(1.0),
    )


def science_exposure(
    rng: np.random.Generator,
    bbox: Box2I,
    wcs,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    info: VisitInfo,
    detector: int,
) -> Exposure:
    """A single-epoch Gaussian-PSF science image (sky and read noise, source noise)."""
    model = render_sources(bbox, GaussianPsf(SCI_SIGMA), x, y, flux)
    image, variance = add_noise(model, SKY, READ, rng)
    return Exposure(
        image.astype(np.float32),
        None,
        variance.astype(np.float32),
        wcs,
        bbox,
        psf=GaussianPsf(SCI_SIGMA),
        photo_calib=PhotoCalib(1.0),
        visit_info=info,
        detector=detector,
    )


def make_pair(
    seed: int,
    *,
    size: int = 1024,
    n_stars: int = 800,
    n_near: int = 120,
    n_isolated: int = 50,
    shift_sigma: float = 0.05,
    host_snr: tuple[float, float] = (300.0, 2000.0),
    distance: tuple[float, float] = (2.0, 6.0),
    transient_snr: tuple[float, float] = (7.0, 40.0),
) -> Pair:
    """Render one template/science pair with known transients."""
    rng = np.random.default_rng(seed)
    bbox = Box2I(0, 0, size, size)
    tbox = bbox.grown(BORDER)
    wcs = make_tan_wcs(210.0, -12.0, (size / 2, size / 2), 0.2, 7.0)
    sigma_counts = np.sqrt(SKY + READ**2) * np.sqrt(4 * np.pi * SCI_SIGMA**2)
    # stars at least 14 px apart, S/N log-uniform 20 .. 3000 (hosts drawn apart)
    x, y = np.zeros(0), np.zeros(0)
    while len(x) < n_stars + n_near:
        xx, yy = rng.uniform(-BORDER + 8, size + BORDER - 8, 2)
        if len(x) == 0 or np.min(np.hypot(x - xx, y - yy)) > 14:
            x, y = np.append(x, xx), np.append(y, yy)
    snr = 10 ** rng.uniform(np.log10(20), np.log10(3000), len(x))
    inside = (x > 20) & (x < size - 20) & (y > 20) & (y < size - 20)
    hosts = rng.choice(np.flatnonzero(inside), n_near, replace=False)
    snr[hosts] = 10 ** rng.uniform(np.log10(host_snr[0]), np.log10(host_snr[1]), n_near)
    star_flux = snr * sigma_counts
    dist = rng.uniform(*distance, n_near)
    angle = rng.uniform(0, 2 * np.pi, n_near)
    tx_near = x[hosts] + dist * np.cos(angle)
    ty_near = y[hosts] + dist * np.sin(angle)
    # isolated transients: at least 15 px from every star
    tx_iso, ty_iso = np.zeros(0), np.zeros(0)
    while len(tx_iso) < n_isolated:
        xx, yy = rng.uniform(25, size - 25, 2)
        if np.min(np.hypot(x - xx, y - yy)) > 15:
            tx_iso, ty_iso = np.append(tx_iso, xx), np.append(ty_iso, yy)
    tx = np.concatenate([tx_near, tx_iso])
    ty = np.concatenate([ty_near, ty_iso])
    n_t = len(tx)
    t_flux = rng.uniform(*transient_snr, n_t) * sigma_counts
    # template: deep and sharp
    template = deep_template(rng, tbox, wcs, x, y, star_flux)
    shift = rng.normal(0.0, shift_sigma, (2, len(x)))
    xs = np.concatenate([x + shift[0], tx])
    ys = np.concatenate([y + shift[1], ty])
    info = VisitInfo(
        visit_id=500 + seed,
        exposure_time=30.0,
        midpoint=Time(61100.3, format="mjd", scale="tai"),
        band="r",
        boresight_ra=210.0,
        boresight_dec=-12.0,
        boresight_az_alt=(200.0, 65.0),
        airmass=1.1,
        parallactic_angle=-20.0,
        rotator_angle=7.0,
    )
    science = science_exposure(rng, bbox, wcs, xs, ys, np.concatenate([star_flux, t_flux]), info, 5)
    host_distance = np.concatenate([dist, np.full(n_isolated, np.nan)])
    host = np.concatenate([snr[hosts], np.full(n_isolated, np.nan)])
    return Pair(template, science, x, y, snr, tx, ty, t_flux, host_distance, host)


def detect_pair(
    pair: Pair, task: DetectAndMeasureTask | None = None
) -> tuple[pd.DataFrame, Exposure]:
    """Subtract and detect; return the DiaSources and the difference image."""
    sub = SubtractImagesTask().run(pair.template, pair.science)
    task = task or DetectAndMeasureTask()
    return task.run(sub.difference, pair.science).diaSources, sub.difference


def recovery(
    pair: Pair, sources: pd.DataFrame, difference: Exposure, radius: float = 1.5
) -> tuple[pd.DataFrame, int]:
    """Per transient: expected S/N, found; and the number of spurious DiaSources.

    A transient is found when a DiaSource lies within ``radius`` pixels of
    it; a DiaSource is spurious when it lies farther than 2.5 pixels from
    every transient (star residuals and noise; the stars do not vary).
    """
    snr = expected_change_snr(difference, pair.x, pair.y, pair.flux)
    sx, sy = sources["x"].to_numpy(), sources["y"].to_numpy()
    if len(sx):
        d = np.hypot(sx[:, None] - pair.x[None, :], sy[:, None] - pair.y[None, :])
        found = d.min(axis=0) <= radius
        spurious = int((d.min(axis=1) > 2.5).sum())
    else:
        found = np.zeros(len(pair.x), bool)
        spurious = 0
    table = pd.DataFrame(
        {
            "snr": snr,
            "found": found,
            "distance": pair.host_distance,
            "host_snr": pair.host_snr,
        }
    )
    return table, spurious


def rescue_outcomes(
    seeds: tuple[int, ...] | list[int], shift_sigma: float = 0.05
) -> dict[bool, tuple[pd.DataFrame, float]]:
    """Per neighbour-rescue setting (off, on): recovery over ``seeds``, mean spurious per image."""
    rows = {}
    for rescue in (False, True):
        tables, spurious = [], []
        for seed in seeds:
            pair = make_pair(seed, shift_sigma=shift_sigma)
            task = DetectAndMeasureTask()
            task.config.doNeighbourRescue = rescue
            sources, difference = detect_pair(pair, task)
            table, n_spurious = recovery(pair, sources, difference)
            tables.append(table)
            spurious.append(n_spurious)
        rows[rescue] = (pd.concat(tables, ignore_index=True), float(np.mean(spurious)))
    return rows
