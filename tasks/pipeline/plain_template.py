"""A plain template: a user's deep coadd or earlier image warped onto the science image.

When a data directory has no DCR model for a band, the template of a
visit/detector is (in this order)

1. ``templates/visit_VVVVVVV/det_DDD.fits``: an image chosen for this
   visit/detector (e.g. an earlier good image of the same field, ingested
   with ``apdb-pipeline ingest --template``);
2. every broadband deep coadd ``coadds/deep/tract_T/patch_P/BAND.fits`` of
   the band whose footprint overlaps the detector.

Each is resampled onto the science WCS and box (grown by a border) with the
Lanczos-3 warper of `tasks.dcr.warp`; where several overlap, the first that
covers a pixel fills it (like Rubin's ``GetTemplateTask`` stitching patches).
The PSF and calibration of the first contributing image are carried over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.core.base import NoWorkFound, TaskError
from tasks.data.layout import DataLayout
from tasks.dcr.warp import warp_exposure
from tasks.images import Exposure, MaskPlane

__all__ = ["template_image_path", "plain_template_paths", "plain_template"]


def template_image_path(layout: DataLayout, visit: int, detector: int) -> Path:
    """``templates/visit_VVVVVVV/det_DDD.fits``: a per-visit/detector template image."""
    return layout.root / "templates" / f"visit_{int(visit):07d}" / f"det_{int(detector):03d}.fits"


def plain_template_paths(layout: DataLayout, band: str, visit: int, detector: int) -> list[Path]:
    """Candidate template files of a visit/detector, in order of preference."""
    own = template_image_path(layout, visit, detector)
    deep = sorted((layout.root / "coadds" / "deep").glob(f"tract_*/patch_*/{band}.fits"))
    return ([own] if own.exists() else []) + deep


def _overlaps(source: Exposure, exposure: Exposure) -> bool:
    """Whether the science box's corners and centre land near the source image."""
    xs = np.array([exposure.bbox.x0, exposure.bbox.x1, exposure.bbox.x0, exposure.bbox.x1])
    ys = np.array([exposure.bbox.y0, exposure.bbox.y0, exposure.bbox.y1, exposure.bbox.y1])
    cx, cy = exposure.bbox.center
    ra, dec = exposure.wcs.all_pix2world(np.append(xs, cx), np.append(ys, cy), 0)
    sx, sy = source.wcs.all_world2pix(ra, dec, 0)
    grown = source.bbox.grown(max(source.bbox.width, source.bbox.height) // 4)
    return bool(np.any(grown.contains(sx, sy)))


def plain_template(
    layout: DataLayout, exposure: Exposure, visit: int, detector: int, border: int = 20
) -> Exposure:
    """Warp the plain template(s) of a visit/detector onto its exposure.

    Parameters
    ----------
    layout : `DataLayout`
        The data directory.
    exposure : `tasks.images.Exposure`
        Science exposure (WCS, box, band).
    visit, detector : `int`
    border : `int`, optional
        Pixels added on every side of the science box.

    Returns
    -------
    template : `tasks.images.Exposure`
        On ``exposure.bbox.grown(border)`` with the science WCS; uncovered
        pixels are ``NO_DATA``.

    Raises
    ------
    NoWorkFound
        If no template file exists or none overlaps the exposure.
    TaskError
        If the contributing image has no PSF or WCS.
    """
    if exposure.wcs is None:
        raise TaskError("the science exposure has no WCS")
    band = exposure.band or exposure.visit_info.band
    paths = plain_template_paths(layout, band, visit, detector)
    if not paths:
        raise NoWorkFound(f"no DCR coadds and no plain template in band {band}")
    box = exposure.bbox.grown(border)
    result: Exposure | None = None
    for path in paths:
        source = layout.read_exposure_file(path)
        if source.wcs is None:
            raise TaskError(f"template {path} has no WCS")
        if not _overlaps(source, exposure):
            continue
        if source.psf is None:
            raise TaskError(f"template {path} has no PSF (ingest it with apdb-pipeline ingest)")
        warped = warp_exposure(source, exposure.wcs, box)
        if result is None:
            result = warped
            continue
        fill = (result.mask & MaskPlane.NO_DATA).astype(bool) & ~(
            warped.mask & MaskPlane.NO_DATA
        ).astype(bool)
        if result.photo_calib is not None and warped.photo_calib is not None:
            scale = result.photo_calib.calibration_mean / warped.photo_calib.calibration_mean
        else:
            scale = 1.0
        result.image[fill] = warped.image[fill] / scale
        result.variance[fill] = warped.variance[fill] / scale**2
        result.mask[fill] = warped.mask[fill]
    if result is None:
        raise NoWorkFound(f"no plain template in band {band} overlaps visit {visit} det {detector}")
    return result
