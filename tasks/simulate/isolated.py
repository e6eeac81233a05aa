"""Isolated-star catalogs, as a prior data release would provide them per tract.

``isolated_star_cat``: one row per isolated star (``isolated_star_id``,
``ra``, ``dec``, ``source_cat_index``, ``nsource``, ``nsource_{band}``),
sorted by id.  ``isolated_star_sources``: one row per star per visit/detector
it falls on (``sourceId``, ``isolated_star_id``, ``obj_index`` (row of the
star in the catalog), ``visit``, ``detector``, ``band``, ``ra``, ``dec``,
``x``, ``y``, ``flux``/``instFlux`` (nJy/counts), ``saturated``), sorted by
``obj_index`` so ``source_cat_index``/``nsource`` index it.  Positions and
fluxes come from the truth (the simulated prior release measured them
perfectly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from tasks.data.skymap import TractInfo
from tasks.simulate.config import SimulationConfig

__all__ = ["find_isolated_stars", "isolated_star_tables"]


def find_isolated_stars(
    objects: pd.DataFrame, tract: TractInfo, config: SimulationConfig
) -> np.ndarray:
    """Return the ``objectId`` of bright static stars with no object within the isolation radius.

    Solar System objects do not count as neighbours (they move on).
    """
    kind = objects["kind"].to_numpy()
    fixed = kind != "sso"
    x, y = tract.sky_to_pixel(objects["ra"].to_numpy()[fixed], objects["dec"].to_numpy()[fixed])
    tree = cKDTree(np.column_stack([x, y]))
    radius_px = config.isolation_radius / tract.pixel_scale
    neighbours = tree.query_ball_point(np.column_stack([x, y]), radius_px, return_length=True)
    candidates = (
        (kind[fixed] == "static")
        & (objects["mag_r"].to_numpy()[fixed] < config.isolated_mag_limit)
        & (neighbours == 1)
        & np.asarray(
            tract.contains(objects["ra"].to_numpy()[fixed], objects["dec"].to_numpy()[fixed])
        )
    )
    return np.sort(objects["objectId"].to_numpy()[fixed][candidates])


def isolated_star_tables(
    objects: pd.DataFrame, truth_sources: pd.DataFrame, star_ids: np.ndarray, bands: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``isolated_star_cat`` and ``isolated_star_sources`` for the given stars."""
    stars = objects.set_index("objectId").loc[star_ids]
    obj_index = pd.Series(np.arange(len(star_ids)), index=star_ids)
    src = truth_sources[truth_sources["objectId"].isin(star_ids)].copy()
    src["obj_index"] = obj_index.loc[src["objectId"].to_numpy()].to_numpy()
    src = src.sort_values(["obj_index", "visit", "detector"], kind="stable").reset_index(drop=True)
    sources = pd.DataFrame(
        {
            "sourceId": np.arange(len(src), dtype=np.int64),
            "isolated_star_id": src["objectId"].to_numpy(dtype=np.int64),
            "obj_index": src["obj_index"].to_numpy(dtype=np.int64),
            "visit": src["visit"].to_numpy(dtype=np.int64),
            "detector": src["detector"].to_numpy(dtype=np.int64),
            "band": src["band"].to_numpy(),
            "ra": src["ra"].to_numpy(),
            "dec": src["dec"].to_numpy(),
            "x": src["x"].to_numpy(),
            "y": src["y"].to_numpy(),
            "flux": src["flux"].to_numpy(),
            "instFlux": src["instFlux"].to_numpy(),
            "saturated": src["saturated"].to_numpy(dtype=bool),
        }
    )
    counts = np.bincount(sources["obj_index"].to_numpy(), minlength=len(star_ids))
    first = (np.cumsum(counts) - counts).astype(np.int64)
    cat = pd.DataFrame(
        {
            "isolated_star_id": np.asarray(star_ids, dtype=np.int64),
            "ra": stars["ra"].to_numpy(),
            "dec": stars["dec"].to_numpy(),
            "source_cat_index": first,
            "nsource": counts.astype(np.int64),
        }
    )
    for band in bands:
        in_band = sources["band"].to_numpy() == band
        cat[f"nsource_{band}"] = np.bincount(
            sources["obj_index"].to_numpy()[in_band], minlength=len(star_ids)
        ).astype(np.int64)
    return cat, sources
