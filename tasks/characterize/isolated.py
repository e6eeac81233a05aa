"""Isolated-star catalogs: per-band selection, concatenation, reserve flags.

The isolated-star catalog of a tract (``isolated_star_cat``: one row per
star, ``isolated_star_id``, ``ra``, ``dec``, optionally ``nsource_{band}``)
and its sources (``isolated_star_sources``: one row per star per visit and
detector, with ``obj_index`` pointing at the star's row, ``visit``,
``detector``, ``band``, ``x``, ``y``) are described in the data layout
(`tasks.data.layout`).  A deterministic fraction of the stars of each tract
and band is reserved from the PSF fit to validate it; the random generator
is seeded from a hash of band and tract, so every visit reserves the same
stars.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.base import TaskError

__all__ = ["load_table", "reserve_mask", "reserve_seed", "select_and_concat"]


def load_table(handle: Any) -> pd.DataFrame:
    """Resolve a table handle: a DataFrame, a Parquet path, or an object with ``get()``."""
    if isinstance(handle, pd.DataFrame):
        return handle
    if isinstance(handle, str | Path):
        return pd.read_parquet(handle)
    getter = getattr(handle, "get", None)
    if callable(getter):
        return load_table(getter())
    raise TaskError(f"cannot read a table from a {type(handle).__name__}")


def reserve_seed(band: str, tract: int) -> int:
    """Seed of the reserve selection of one band and tract (stable across runs)."""
    digest = hashlib.sha256(f"reserve:{band}:{int(tract)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def reserve_mask(n: int, fraction: float, band: str, tract: int) -> np.ndarray:
    """Boolean mask reserving ``round(fraction * n)`` of ``n`` stars, deterministically."""
    if not 0.0 <= fraction < 1.0:
        raise TaskError(f"reserve fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(n, dtype=bool)
    n_reserved = int(round(fraction * n))
    if n_reserved:
        order = np.random.default_rng(reserve_seed(band, tract)).permutation(n)
        mask[order[:n_reserved]] = True
    return mask


def _stars_in_band(stars: pd.DataFrame, sources: pd.DataFrame, band: str) -> np.ndarray:
    """Row numbers of the stars observed in ``band``."""
    column = f"nsource_{band}"
    if column in stars.columns:
        return np.flatnonzero(stars[column].to_numpy() > 0)
    if "band" in sources.columns:
        seen = sources.loc[sources["band"].to_numpy() == band, "obj_index"].to_numpy()
        return np.unique(seen.astype(np.int64))
    raise TaskError(
        f"cannot tell which isolated stars were seen in {band!r}: "
        f"no {column!r} column in the star table and no 'band' column in the sources"
    )


def select_and_concat(
    band: str,
    star_tables: Mapping[int, pd.DataFrame],
    source_tables: Mapping[int, pd.DataFrame],
    reserve_fraction: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep stars seen in ``band``, reserve some per tract, and concatenate tracts.

    Parameters
    ----------
    band : `str`
        Band of the visit.
    star_tables, source_tables : `dict` [`int`, `pandas.DataFrame`]
        Per-tract isolated-star and isolated-source tables (same keys).
    reserve_fraction : `float`, optional
        Fraction of stars reserved per tract and band.

    Returns
    -------
    isolated_table : `pandas.DataFrame`
        Stars in ``band``, with ``tract`` and ``reserved`` columns.
    isolated_source_table : `pandas.DataFrame`
        Their sources in ``band``; ``obj_index`` is re-indexed into
        ``isolated_table``; ``reserved`` is inherited from the star.
    """
    if set(star_tables) != set(source_tables):
        raise TaskError(
            f"isolated-star catalogs and sources cover different tracts: "
            f"{sorted(star_tables)} vs {sorted(source_tables)}"
        )
    star_parts, source_parts = [], []
    offset = 0
    for tract in sorted(star_tables):
        stars = star_tables[tract].reset_index(drop=True)
        sources = source_tables[tract].reset_index(drop=True)
        for column in ("ra", "dec"):
            if column not in stars.columns:
                raise TaskError(f"isolated_star_cat of tract {tract} lacks {column!r}")
        if "obj_index" not in sources.columns:
            raise TaskError(f"isolated_star_sources of tract {tract} lacks 'obj_index'")
        keep = _stars_in_band(stars, sources, band)
        new_index = np.full(len(stars), -1, dtype=np.int64)
        new_index[keep] = np.arange(keep.size) + offset
        stars = stars.iloc[keep].reset_index(drop=True)
        stars["tract"] = int(tract)
        stars["reserved"] = reserve_mask(len(stars), reserve_fraction, band, tract)
        obj = sources["obj_index"].to_numpy().astype(np.int64)
        if obj.size and (obj.min() < 0 or obj.max() >= len(new_index)):
            raise TaskError(f"isolated_star_sources of tract {tract} point at missing stars")
        in_band = new_index[obj] >= 0
        if "band" in sources.columns:
            in_band &= sources["band"].to_numpy() == band
        sources = sources[in_band].reset_index(drop=True)
        sources["obj_index"] = new_index[obj[in_band]]
        sources["tract"] = int(tract)
        sources["reserved"] = stars["reserved"].to_numpy()[sources["obj_index"].to_numpy() - offset]
        star_parts.append(stars)
        source_parts.append(sources)
        offset += len(stars)
    if not star_parts:
        return pd.DataFrame(columns=["ra", "dec", "tract", "reserved"]), pd.DataFrame(
            columns=["obj_index", "tract", "reserved"]
        )
    return pd.concat(star_parts, ignore_index=True), pd.concat(source_parts, ignore_index=True)
