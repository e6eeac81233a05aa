"""PSF-star candidates from an image's own detections, when no isolated-star catalog exists.

The final characterization (`FinalizeCharacterizationTask`) takes its PSF
stars from the isolated-star catalog of the tract.  A user who brings single
images has none; `isolated_stars_from_detections` builds the equivalent
one-visit catalog from the image's own single-frame detections: positive,
unflagged point-like detections with no other detection (of any
brightness) within ``min_separation`` pixels.  The final characterization
then applies its usual S/N cut, stamp checks and reserve selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from tasks.core.base import NoWorkFound

__all__ = ["isolated_stars_from_detections"]

_BAD_FLAGS = (
    "isNegative",
    "isDipole",
    "pixelFlags_saturated",
    "pixelFlags_bad",
    "pixelFlags_edge",
    "pixelFlags_cr",
    "pixelFlags_nodata",
    "centroid_flag",
    "psfFlux_flag",
)


def isolated_stars_from_detections(
    src: pd.DataFrame,
    visit: int,
    detector: int,
    band: str,
    min_separation: float = 15.0,
    tract: int = 0,
) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
    """Build one-visit isolated-star tables from single-frame detections.

    Parameters
    ----------
    src : `pandas.DataFrame`
        Detections on the science image (``x``, ``y``, ``ra``, ``dec``; flag
        columns listed in ``_BAD_FLAGS`` are honoured when present).
    visit, detector : `int`
    band : `str`
    min_separation : `float`, optional
        Minimum distance (pixels) to any other detection.
    tract : `int`, optional
        Key of the returned dictionaries.

    Returns
    -------
    cats, sources : `dict` [`int`, `pandas.DataFrame`]
        ``{tract: isolated_star_cat}`` and ``{tract: isolated_star_sources}``
        as `FinalizeCharacterizationTask.run` takes them.

    Raises
    ------
    NoWorkFound
        If no detection qualifies.
    """
    if len(src) == 0:
        raise NoWorkFound("no detections on the science image to select PSF stars from")
    x = src["x"].to_numpy(float)
    y = src["y"].to_numpy(float)
    finite = np.isfinite(x) & np.isfinite(y)
    good = finite.copy()
    for flag in _BAD_FLAGS:
        if flag in src.columns:
            good &= ~src[flag].fillna(False).to_numpy(bool)
    if "psfFlux" in src.columns:
        good &= src["psfFlux"].to_numpy(float) > 0
    points = np.column_stack([np.where(finite, x, -1e9), np.where(finite, y, -1e9)])
    counts = np.array([len(n) for n in cKDTree(points).query_ball_point(points, min_separation)])
    good &= counts == 1  # only itself
    rows = src.loc[good].reset_index(drop=True)
    if len(rows) == 0:
        raise NoWorkFound(
            f"none of {len(src)} detections is an unflagged source isolated by {min_separation} px"
        )
    ids = np.arange(len(rows), dtype=np.int64)
    cat = pd.DataFrame(
        {
            "isolated_star_id": ids,
            "ra": rows["ra"].to_numpy(float),
            "dec": rows["dec"].to_numpy(float),
            f"nsource_{band}": np.ones(len(rows), dtype=np.int64),
        }
    )
    sources = pd.DataFrame(
        {
            "isolated_star_id": ids,
            "obj_index": ids,
            "visit": np.full(len(rows), int(visit), dtype=np.int64),
            "detector": np.full(len(rows), int(detector), dtype=np.int64),
            "band": band,
            "x": rows["x"].to_numpy(float),
            "y": rows["y"].to_numpy(float),
        }
    )
    return {tract: cat}, {tract: sources}
