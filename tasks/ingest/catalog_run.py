"""Catalog-only mode: a user's difference-image detections → association → APDB → alerts.

`run_catalog` takes DiaSource rows (from `tasks.ingest.catalog.to_dia_sources`
or `tasks.ingest.ztf.ztf_dia_sources`) and processes them visit/detector by
visit/detector in time order with the same `DiaPipelineTask` and
`PackageAlertsTask` as the image pipeline:

- where the data directory holds the visit/detector's science exposure
  (``exposures/visit_V/det_D.fits``) and difference image
  (``outputs/visit_V/det_D/diffim.fits``), forced photometry runs on them and
  the alerts get their cutouts (and the template's, when
  ``outputs/visit_V/det_D/template.fits`` exists);
- otherwise a `CatalogFootprint` stands in for the exposure: a TAN grid
  (1 arcsec pixels) around the visit/detector's detections that defines the
  sky region the APDB is read from; forced photometry is skipped and the
  alerts' cutouts are null, with the reason logged.  DiaSources without
  pixel coordinates get their position on that grid (the schema requires
  ``x`` and ``y``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.time import Time
from astropy.wcs import WCS

from tasks.alerts import PackageAlertsConfig, PackageAlertsTask
from tasks.core.base import TaskError
from tasks.data.layout import DataLayout
from tasks.images import Box2I
from tasks.images.visit_info import VisitInfo
from tasks.images.wcs_utils import make_tan_wcs
from tasks.ingest.catalog import DIA_SOURCE_COLUMNS
from tasks.ingest.errors import IngestError
from tasks.pipeline.diapipe import DiaPipelineConfig, DiaPipelineTask

__all__ = [
    "CatalogFootprint",
    "CatalogRunSummary",
    "catalog_footprint",
    "check_catalog_sources",
    "run_catalog",
]

_log = logging.getLogger(__name__)

_PIXEL_SCALE_ARCSEC = 1.0
_MARGIN_PIXELS = 5


@dataclass
class CatalogFootprint:
    """What the DIA pipeline needs of an exposure, for a visit/detector with no image."""

    wcs: WCS
    bbox: Box2I
    visit_info: VisitInfo
    detector: int
    band: str
    psf: Any = None
    photo_calib: Any = None
    ap_corr_map: Any = None

    def sky_to_pixel(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates on the footprint grid."""
        x, y = self.wcs.wcs_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x), np.asarray(y)


def _mean_position(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).sum(axis=1)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(
        np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))
    )


def catalog_footprint(
    sources: pd.DataFrame, visit: int, detector: int, exposure_time: float = 0.0
) -> CatalogFootprint:
    """Build the footprint of one visit/detector's detections.

    The visit info carries the visit, band and midpoint of the detections;
    the pointing is their mean position, and the observing geometry (zenith
    pointing, airmass 1) is unknown and unused in catalog mode.
    """
    bands = sources["band"].unique()
    times = sources["midpointMjdTai"].unique()
    if len(bands) != 1 or len(times) != 1:
        raise IngestError(
            f"visit {visit} detector {detector} mixes bands {sorted(bands)} or midpoints "
            f"{[float(t) for t in sorted(times)[:3]]}: give each exposure its own visit"
        )
    ra0, dec0 = _mean_position(sources["ra"].to_numpy(float), sources["dec"].to_numpy(float))
    wcs = make_tan_wcs(ra0, dec0, (0.0, 0.0), _PIXEL_SCALE_ARCSEC)
    x, y = wcs.wcs_world2pix(sources["ra"].to_numpy(float), sources["dec"].to_numpy(float), 0)
    x0 = int(np.floor(x.min())) - _MARGIN_PIXELS
    y0 = int(np.floor(y.min())) - _MARGIN_PIXELS
    box = Box2I.from_corners(
        x0, y0, int(np.ceil(x.max())) + _MARGIN_PIXELS, int(np.ceil(y.max())) + _MARGIN_PIXELS
    )
    info = VisitInfo(
        visit_id=int(visit),
        exposure_time=float(exposure_time),
        midpoint=Time(float(times[0]), format="mjd", scale="tai"),
        band=str(bands[0]),
        boresight_ra=ra0,
        boresight_dec=dec0,
        boresight_az_alt=(0.0, 90.0),
        airmass=1.0,
        parallactic_angle=0.0,
        rotator_angle=0.0,
    )
    return CatalogFootprint(wcs, box, info, int(detector), str(bands[0]))


@dataclass
class CatalogRunSummary:
    """What `run_catalog` did."""

    processed: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
    with_images: list[tuple[int, int]] = field(default_factory=list)
    n_dia_sources: int = 0
    n_new_dia_objects: int = 0
    n_forced: int = 0
    n_alerts: int = 0
    alert_files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0

    def format(self) -> str:
        """Human-readable summary."""
        return "\n".join(
            [
                f"visits/detectors processed: {len(self.processed)}   skipped (already stored): "
                f"{len(self.skipped)}   with images: {len(self.with_images)}",
                f"DiaSources: {self.n_dia_sources}   new DiaObjects: {self.n_new_dia_objects}"
                f"   forced measurements: {self.n_forced}   alerts: {self.n_alerts}",
                f"wall time: {self.wall_seconds:.1f} s",
            ]
        )


def _images(layout: DataLayout | None, visit: int, detector: int) -> tuple[Any, Any, Any]:
    """Science exposure, difference image and template of a visit/detector (each or `None`)."""
    if layout is None:
        return None, None, None
    science = None
    if layout.exposure_path(visit, detector).exists():
        science = layout.read_exposure(visit, detector)
        if science.visit_info is None:
            science.visit_info = layout.read_visit_info(visit)
        if science.detector is None:
            science.detector = detector
    found = []
    for name in ("diffim", "template"):
        path = layout.output_path(name, visit, detector, ".fits")
        found.append(layout.read_exposure_file(path) if path.exists() else None)
    return science, found[0], found[1]


def check_catalog_sources(sources: pd.DataFrame) -> None:
    """Check a whole catalog before anything is stored.

    Raises
    ------
    IngestError
        Missing columns, or a visit/detector mixing bands or midpoints (each
        visit/detector is one exposure).
    """
    missing = [c for c in DIA_SOURCE_COLUMNS if c not in sources.columns]
    if missing:
        raise IngestError(f"the DiaSource table lacks {missing}")
    per_exposure = sources.groupby(["visit", "detector"], sort=True).agg(
        bands=("band", "nunique"), times=("midpointMjdTai", "nunique")
    )
    mixed = per_exposure[(per_exposure["bands"] > 1) | (per_exposure["times"] > 1)]
    if len(mixed):
        visit, detector = (int(v) for v in mixed.index[0])
        rows = sources[(sources["visit"] == visit) & (sources["detector"] == detector)]
        catalog_footprint(rows, visit, detector)  # raises with the details


def run_catalog(
    sources: pd.DataFrame,
    apdb: Any,
    alert_dir: str | Path | None = None,
    layout: DataLayout | None = None,
    dia_config: DiaPipelineConfig | None = None,
    alert_config: PackageAlertsConfig | None = None,
    exposure_time: float = 0.0,
) -> CatalogRunSummary:
    """Associate, store and alert a catalog of DiaSources, visit by visit in time order.

    Parameters
    ----------
    sources : `pandas.DataFrame`
        DiaSource rows with at least `tasks.ingest.catalog.DIA_SOURCE_COLUMNS`;
        extra columns the APDB does not know (e.g. ``candid``) are dropped.
    apdb : `apdb.Apdb`
        The database; visit/detectors it already holds are skipped.
    alert_dir : path, optional
        Where the alert files go (no alerts without it).
    layout : `DataLayout`, optional
        Data directory holding images for some visit/detectors.
    dia_config, alert_config : optional
        Configurations of `DiaPipelineTask` and `PackageAlertsTask`.
    exposure_time : `float`, optional
        Seconds, recorded in the visit info of image-less visits.

    Returns
    -------
    summary : `CatalogRunSummary`

    Raises
    ------
    IngestError
        Missing columns, or a visit/detector mixing bands or times.
    """
    start = time.perf_counter()
    check_catalog_sources(sources)
    from apdb.schema import table_columns

    known = {c.name for c in table_columns("DiaSource")}
    sources = sources[[c for c in sources.columns if c in known]]
    dia_config = dia_config or DiaPipelineConfig()
    no_images = dia_config.model_copy(update={"doRunForcedMeasurement": False})
    with_images_task = DiaPipelineTask(config=dia_config)
    catalog_task = DiaPipelineTask(config=no_images)
    alerts_task = None
    if alert_dir is not None:
        alert_config = alert_config or PackageAlertsConfig()
        alert_config.alertWriteLocation = str(alert_dir)
        alerts_task = PackageAlertsTask(config=alert_config)
    order = (
        sources.groupby(["visit", "detector"], sort=False)["midpointMjdTai"]
        .min()
        .reset_index()
        .sort_values(["midpointMjdTai", "visit", "detector"])
    )
    groups = sources.groupby(["visit", "detector"], sort=False)
    summary = CatalogRunSummary()
    warned = False
    for visit, detector in zip(order["visit"], order["detector"], strict=True):
        visit, detector = int(visit), int(detector)
        if apdb.contains_visit_detector(visit, detector):
            summary.skipped.append((visit, detector))
            continue
        rows = groups.get_group((visit, detector)).reset_index(drop=True)
        science, diffim, template = _images(layout, visit, detector)
        if science is not None and diffim is not None:
            exposure, task = science, with_images_task
            summary.with_images.append((visit, detector))
        else:
            exposure, task = catalog_footprint(rows, visit, detector, exposure_time), catalog_task
            if not warned:
                _log.warning(
                    "visit %d detector %d (and others like it): no science exposure and "
                    "difference image in the data directory: no forced photometry, alert "
                    "cutouts are null",
                    visit,
                    detector,
                )
                warned = True
        rows = _pixel_columns(rows, exposure)
        try:
            dia = task.run(rows, diffim, exposure, template, apdb)
        except TaskError as exc:
            raise IngestError(f"visit {visit} detector {detector}: {exc}") from exc
        summary.processed.append((visit, detector))
        summary.n_dia_sources += len(dia.associatedDiaSources)
        summary.n_new_dia_objects += int(dia.nNewDiaObjects)
        summary.n_forced += int(dia.nDiaForcedSources)
        if alerts_task is not None:
            alerts = alerts_task.run(
                dia.associatedDiaSources,
                dia.diaObjects,
                dia.diaSourceHistory,
                dia.diaForcedSourceHistory,
                diffim,
                science,
                template,
                ssSrc=dia.ssSources,
                visit=visit,
                detector=detector,
            )
            summary.n_alerts += int(alerts.nAlerts)
            if alerts.alertFile is not None:
                summary.alert_files.append(Path(alerts.alertFile))
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _pixel_columns(rows: pd.DataFrame, exposure: Any) -> pd.DataFrame:
    """Fill ``x``, ``y`` (and ``bboxSize``) where the catalog has none."""
    rows = rows.copy()
    if "x" not in rows.columns or "y" not in rows.columns or rows[["x", "y"]].isna().any().any():
        wcs = exposure.wcs
        x, y = wcs.all_world2pix(rows["ra"].to_numpy(float), rows["dec"].to_numpy(float), 0)
        for name, values in (("x", x), ("y", y)):
            if name in rows.columns:
                rows[name] = rows[name].fillna(pd.Series(values, index=rows.index))
            else:
                rows[name] = values
    if "bboxSize" not in rows.columns:
        rows["bboxSize"] = 0
    return rows
