"""Simulate a whole survey and write it in the data layout (`tasks.data.layout`).

`simulate_survey` plans the visits, draws the objects, renders every
visit/detector and the coadds, and writes exposures, coadds, isolated-star
catalogs, Solar System predictions, the visit table and truth tables.
Randomness is split by purpose with `numpy.random.SeedSequence`, and each
exposure's noise and its defects (bad columns, cosmic rays) are seeded by
``(seed, visit, detector)`` in streams of their own, so the same config
always gives the same files and the defects stay put when the sources change.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from tasks.core.base import Struct
from tasks.data.layout import DataLayout, visit_info_to_row
from tasks.images.psf import Psf, nearest_pixel
from tasks.images.visit_info import VisitInfo
from tasks.images.wcs_utils import sky_direction_in_pixels
from tasks.simulate.chromatic import DcrComponents, dcr_components, smallest_psf_width
from tasks.simulate.coadds import render_patch_coadds
from tasks.simulate.config import SimulationConfig
from tasks.simulate.geometry import (
    STREAMS,
    detector_bbox,
    detector_psf,
    detector_wcs,
    make_skymap,
    seeded_rng,
    visit_calibration,
)
from tasks.simulate.isolated import find_isolated_stars, isolated_star_tables
from tasks.simulate.observing import PlannedVisit, plan_visits
from tasks.simulate.refraction import sed_dcr_shift
from tasks.simulate.render import render_exposure
from tasks.simulate.sources import make_objects, object_fluxes, object_positions

__all__ = ["simulate_survey", "source_dcr_components"]

log = logging.getLogger(__name__)


def _visit_sources(
    config: SimulationConfig,
    objects: pd.DataFrame,
    planned: PlannedVisit,
    detector: int,
    wcs: WCS,
    ra: np.ndarray,
    dec: np.ndarray,
    flux: np.ndarray,
    dcr_arcsec: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Objects falling on one visit/detector with their rendered positions, and their mask."""
    info = planned.visit_info
    bbox = detector_bbox(config)
    x, y = wcs.wcs_world2pix(ra, dec, 0)
    cx, cy = bbox.center
    ux, uy = sky_direction_in_pixels(wcs, cx, cy, info.parallactic_angle)
    shift = dcr_arcsec / config.pixel_scale
    sx, sy = shift * ux, shift * uy
    x = x + sx
    y = y + sy
    near = np.asarray(bbox.grown(40).contains(x, y))
    table = pd.DataFrame(
        {
            "objectId": objects["objectId"].to_numpy()[near],
            "kind": objects["kind"].to_numpy()[near],
            "ssObjectId": objects["ssObjectId"].to_numpy()[near],
            "visit": np.full(near.sum(), info.visit_id, dtype=np.int64),
            "detector": np.full(near.sum(), detector, dtype=np.int64),
            "band": info.band,
            "midpointMjdTai": info.midpoint_mjd_tai,
            "ra": ra[near],
            "dec": dec[near],
            "x": x[near],
            "y": y[near],
            "dcrShiftX": sx[near],
            "dcrShiftY": sy[near],
            "flux": flux[near],
        }
    )
    return table, near


def source_dcr_components(
    config: SimulationConfig, visit_info: VisitInfo, wcs: WCS, psf: Psf, sed_slope: np.ndarray
) -> DcrComponents:
    """DCR components with which the simulator draws sources on a visit/detector.

    Parameters
    ----------
    config : `SimulationConfig`
        The survey's config (pixel scale, detector size, render tolerance).
    visit_info : `tasks.images.VisitInfo`
        The visit (band, zenith distance, parallactic angle, weather).
    wcs : `astropy.wcs.WCS`
        The detector's WCS.
    psf : `tasks.images.Psf`
        The detector's PSF (its narrowest width sets the number of components).
    sed_slope : `numpy.ndarray`
        Spectral slope of each source.

    Returns
    -------
    components : `DcrComponents`
        Offsets from each source's truth ``x, y`` (its flux-weighted mean
        position) and flux fractions; ``render_sources(..., components=...)``
        at the truth positions reproduces the noiseless image.
    """
    bbox = detector_bbox(config)
    cx, cy = bbox.center
    direction = sky_direction_in_pixels(wcs, cx, cy, visit_info.parallactic_angle)
    return dcr_components(
        visit_info.band,
        sed_slope,
        visit_info.zenith_distance,
        visit_info.weather,
        direction,
        config.pixel_scale,
        smallest_psf_width(psf, bbox),
        config.dcr_render_tolerance,
    )


_TRAIL_POINTS = 9


def _trailed(
    src: pd.DataFrame, objects: pd.DataFrame, info: VisitInfo, wcs: WCS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions and fluxes to render: each SSO becomes a trail of points over the exposure.

    A Solar System object moves during the exposure (0.6″ in 30 s at 0.5 deg/day),
    so its light is spread evenly over ``_TRAIL_POINTS`` positions between its
    places at the start and the end of the exposure; the truth keeps the midpoint.
    Each point carries the object's DCR shift (and, through the returned row
    index, its DCR components: the trail is drawn in every colour).

    Returns
    -------
    x, y, flux : `numpy.ndarray`
        Points to render: the other sources first, then each SSO's trail.
    rows : `numpy.ndarray`
        Row of ``src`` each point belongs to.
    """
    x = src["x"].to_numpy()
    y = src["y"].to_numpy()
    flux = src["flux"].to_numpy()
    sso = src["kind"].to_numpy() == "sso"
    if not sso.any():
        return x, y, flux, np.arange(len(src))
    moving = objects.set_index("objectId").loc[src["objectId"].to_numpy()[sso]].reset_index()
    half = 0.5 * info.exposure_time / 86400.0
    ends = []
    for dt in (-half, half):
        ra, dec = object_positions(moving, info.midpoint_mjd_tai + dt)
        ex, ey = wcs.wcs_world2pix(ra, dec, 0)
        ends.append((ex + src["dcrShiftX"].to_numpy()[sso], ey + src["dcrShiftY"].to_numpy()[sso]))
    frac = np.linspace(0.0, 1.0, _TRAIL_POINTS)
    tx = ends[0][0][:, None] + frac[None, :] * (ends[1][0] - ends[0][0])[:, None]
    ty = ends[0][1][:, None] + frac[None, :] * (ends[1][1] - ends[0][1])[:, None]
    tf = np.repeat(flux[sso][:, None] / _TRAIL_POINTS, _TRAIL_POINTS, axis=1)
    return (
        np.concatenate([x[~sso], tx.ravel()]),
        np.concatenate([y[~sso], ty.ravel()]),
        np.concatenate([flux[~sso], tf.ravel()]),
        np.concatenate([np.flatnonzero(~sso), np.repeat(np.flatnonzero(sso), _TRAIL_POINTS)]),
    )


def _ss_predictions(
    config: SimulationConfig, objects: pd.DataFrame, info: VisitInfo, radius_deg: float
) -> pd.DataFrame:
    sso = objects[objects["kind"] == "sso"]
    ra, dec = object_positions(sso, info.midpoint_mjd_tai)
    rng = seeded_rng(config, STREAMS["ssp"], info.visit_id)
    err = config.sso_prediction_error / 3600.0
    pra = ra + rng.normal(0, err, ra.size) / np.cos(np.radians(dec))
    pdec = dec + rng.normal(0, err, dec.size)
    cosd = np.sin(np.radians(dec)) * np.sin(np.radians(info.boresight_dec)) + np.cos(
        np.radians(dec)
    ) * np.cos(np.radians(info.boresight_dec)) * np.cos(np.radians(ra - info.boresight_ra))
    near = np.degrees(np.arccos(np.clip(cosd, -1, 1))) < radius_deg
    mag = 31.4 - 2.5 * np.log10(sso[f"flux_{info.band}"].to_numpy())
    return pd.DataFrame(
        {
            "ssObjectId": sso["ssObjectId"].to_numpy()[near],
            "ra": pra[near] % 360.0,
            "dec": pdec[near],
            "raRate": sso["raRate"].to_numpy()[near],
            "decRate": sso["decRate"].to_numpy()[near],
            "mag": mag[near],
        }
    )


def simulate_survey(
    config: SimulationConfig | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Struct:
    """Simulate a survey and (when ``root`` is given) write it in the data layout.

    Parameters
    ----------
    config : `SimulationConfig`, optional
        Survey definition (default: the small default survey).
    root : `str` or `os.PathLike`, optional
        Data directory to write; nothing is written when `None` (the truth is
        still returned, exposures are kept in memory instead).

    Returns
    -------
    truth : `tasks.core.base.Struct`
        ``objects`` (per-object truth), ``sources`` (per visit/detector truth:
        true ra/dec at the visit, rendered ``x, y`` including the DCR shift,
        ``flux`` in nJy, ``instFlux`` in counts, ``saturated``), ``visits``
        (visit table), ``skymap``, ``coverage`` (tract-pixel box of all
        footprints), ``isolated_star_ids``, ``ss_predictions`` (visit →
        DataFrame), ``layout`` (`DataLayout` or `None`) and ``exposures``
        ((visit, detector) → `Exposure`, only when ``root`` is `None`).
    """
    config = config if config is not None else SimulationConfig()
    layout = DataLayout(root) if root is not None else None
    planned = plan_visits(config, seeded_rng(config, STREAMS["plan"]))
    bbox = detector_bbox(config)
    wcss = {
        (p.visit_info.visit_id, d): detector_wcs(config, p.visit_info, d)
        for p in planned
        for d in range(config.n_detectors)
    }
    footprints = [tuple(w.wcs_pix2world(bbox.corners(), 0).T) for w in wcss.values()]
    skymap, coverage = make_skymap(config, footprints)
    tract = skymap[0]

    def sample_positions(n: int) -> tuple[np.ndarray, np.ndarray]:
        xs = rng_obj.uniform(coverage.x0, coverage.x1, n)
        ys = rng_obj.uniform(coverage.y0, coverage.y1, n)
        ra, dec = tract.wcs.wcs_pix2world(xs, ys, 0)
        return ra % 360.0, dec

    rng_obj = seeded_rng(config, STREAMS["objects"])
    times = np.array([p.visit_info.midpoint_mjd_tai for p in planned])
    objects = make_objects(rng_obj, config, sample_positions, times)
    slopes = objects["sedSlope"].to_numpy()

    truth_rows = []
    exposures = {}
    ss_predictions = {}
    fov_radius = (
        math.hypot(config.n_detectors * (bbox.width + config.detector_gap), bbox.height)
        / 2
        * config.pixel_scale
        / 3600.0
        + 0.02
    )
    for p in planned:
        info = p.visit_info
        ra, dec = object_positions(objects, info.midpoint_mjd_tai)
        flux = object_fluxes(objects, info.band, info.midpoint_mjd_tai)
        if config.apply_dcr:
            dcr = sed_dcr_shift(info.band, slopes, info.zenith_distance, info.weather)
        else:
            dcr = np.zeros(len(objects))
        calib = visit_calibration(config, info)
        sky = config.sky[info.band] * (1.0 + 0.2 * (info.airmass - 1.0))
        for det in range(config.n_detectors):
            wcs = wcss[(info.visit_id, det)]
            src, near = _visit_sources(config, objects, p, det, wcs, ra, dec, flux, dcr)
            psf = detector_psf(config, p, det)
            rx, ry, rflux, rows = _trailed(src, objects, info, wcs)
            components = None
            if config.apply_dcr:
                components = source_dcr_components(config, info, wcs, psf, slopes[near])
                components = components.select(rows)
            result = render_exposure(
                bbox,
                wcs,
                psf,
                rx,
                ry,
                rflux,
                photo_calib=calib,
                sky=sky,
                read_noise=config.read_noise,
                rng=seeded_rng(config, STREAMS["noise"], info.visit_id, det),
                defect_rng=seeded_rng(config, STREAMS["defects"], info.visit_id, det),
                saturation=config.saturation,
                n_bad_columns=config.n_bad_columns,
                n_cosmic_rays=config.n_cosmic_rays,
                visit_info=info,
                detector=det,
                components=components,
            )
            src["instFlux"] = calib.nanojansky_to_instflux(src["flux"].to_numpy())
            on = np.asarray(bbox.contains(src["x"].to_numpy(), src["y"].to_numpy()))
            saturated = np.zeros(len(src), dtype=bool)
            rows = nearest_pixel(src["y"].to_numpy()[on]) - bbox.y0
            cols = nearest_pixel(src["x"].to_numpy()[on]) - bbox.x0
            saturated[on] = result.defects.saturated[rows, cols]
            src["saturated"] = saturated
            truth_rows.append(src[on])
            if layout is not None:
                layout.write_exposure(result.exposure)
            else:
                exposures[(info.visit_id, det)] = result.exposure
        ss_predictions[info.visit_id] = _ss_predictions(config, objects, info, fov_radius)
        if layout is not None:
            layout.write_ss_predictions(info.visit_id, ss_predictions[info.visit_id])
        log.info("visit %d (%s) rendered", info.visit_id, info.band)
    sources = pd.concat(truth_rows, ignore_index=True)
    visits = pd.DataFrame([visit_info_to_row(p.visit_info) for p in planned])
    visits["seeing"] = [p.seeing_fwhm for p in planned]
    isolated_ids = find_isolated_stars(objects, tract, config)
    objects["isIsolated"] = objects["objectId"].isin(isolated_ids)

    if layout is not None:
        rng_coadd = seeded_rng(config, STREAMS["coadds"])
        patches = [pi for pi in tract.patches() if pi.outer_bbox.intersection(coverage) is not None]
        for band in dict.fromkeys(p.visit_info.band for p in planned):
            for pi in patches:
                coadds = render_patch_coadds(objects, pi, band, config, rng_coadd)
                for k, exp in enumerate(coadds.subfilters):
                    layout.write_dcr_coadd(exp, pi.tract, pi.patch, band, k)
                if config.write_deep_coadds:
                    layout.write_deep_coadd(coadds.deep, pi.tract, pi.patch, band)
        cat, iso_src = isolated_star_tables(objects, sources, isolated_ids, config.bands)
        layout.write_isolated_stars(tract.tract_id, cat, iso_src)
        layout.write_visit_table(visits)
        layout.write_skymap(skymap)
        layout.write_survey({"simulator": config.model_dump(mode="json")})
        layout.write_truth(objects, sources)
    return Struct(
        objects=objects,
        sources=sources,
        visits=visits,
        skymap=skymap,
        coverage=coverage,
        isolated_star_ids=isolated_ids,
        ss_predictions=ss_predictions,
        layout=layout,
        exposures=exposures,
    )
