"""New DiaObjects and the per-band summary statistics of DiaObjects.

Everything here is vectorised with pandas ``groupby`` on the concatenated
DiaSource history: no Python loop over objects.

Definitions (per object and band, over the DiaSources with a finite ``psfFlux``):

- ``{band}_psfFluxNdata``: their number (0 where the band has none);
- ``{band}_psfFluxMean``: inverse-variance weighted mean of ``psfFlux``, weights
  ``w = psfFluxErr**-2`` over rows with a finite positive error;
  ``{band}_psfFluxMeanErr = 1 / sqrt(sum(w))``;
- ``{band}_psfFluxSigma``: sample standard deviation (ddof=1; NaN for one point);
- ``{band}_psfFluxMin`` / ``Max``; ``{band}_psfFluxErrMean``: mean of ``psfFluxErr``;
- ``{band}_psfFluxMaxSlope``: max ``|Δflux/Δt|`` (nJy/day) over consecutive
  time-ordered pairs with ``Δt > 0``;
- ``{band}_scienceFluxMean`` / ``MeanErr``: the same weighted mean for ``scienceFlux``;
- ``{band}_fpFluxMean`` / ``MeanErr``: the same weighted mean for the forced
  ``psfFlux`` of the DiaForcedSources (when given).

Per object: ``ra``/``dec`` the mean of the unit vectors of all its DiaSources,
``raErr``/``decErr`` the inverse-variance combination of the sources' errors,
``nDiaSources``, ``firstDiaSourceMjdTai``, ``lastDiaSourceMjdTai``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.association.skygeom import unit_vectors, vectors_to_radec
from tasks.base import TaskError

__all__ = [
    "BANDS",
    "BAND_STAT_NAMES",
    "assign_new_dia_objects",
    "compute_dia_object_stats",
    "compute_forced_flux_stats",
]

BANDS = ("u", "g", "r", "i", "z", "y")
BAND_STAT_NAMES = (
    "psfFluxMean",
    "psfFluxMeanErr",
    "psfFluxSigma",
    "psfFluxNdata",
    "psfFluxMin",
    "psfFluxMax",
    "psfFluxMaxSlope",
    "psfFluxErrMean",
    "scienceFluxMean",
    "scienceFluxMeanErr",
)


def assign_new_dia_objects(unassociated: pd.DataFrame) -> pd.DataFrame:
    """Return the unassociated sources with ``diaObjectId`` set to their own ``diaSourceId``.

    Parameters
    ----------
    unassociated : `pandas.DataFrame`
        DiaSources that matched no DiaObject (already filtered for flags).

    Returns
    -------
    seeded : `pandas.DataFrame`
        A copy with ``diaObjectId = diaSourceId`` (each seeds one new DiaObject).
    """
    seeded = unassociated.copy()
    seeded["diaObjectId"] = pd.array(seeded["diaSourceId"].to_numpy(np.int64), dtype="Int64")
    return seeded


def _weighted_mean(
    keys: pd.DataFrame, value: np.ndarray, error: np.ndarray, prefix: str
) -> pd.DataFrame:
    """Per-group inverse-variance weighted mean of ``value`` and its error."""
    ok = np.isfinite(value) & np.isfinite(error) & (error > 0)
    w = np.where(ok, 1.0 / np.where(ok, error, 1.0) ** 2, 0.0)
    parts = keys.assign(_w=w, _wf=np.where(ok, w * np.where(ok, value, 0.0), 0.0))
    sums = parts.groupby(list(keys.columns), sort=False)[["_w", "_wf"]].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(sums["_w"] > 0, sums["_wf"] / sums["_w"], np.nan)
        err = np.where(sums["_w"] > 0, 1.0 / np.sqrt(sums["_w"]), np.nan)
    return pd.DataFrame({f"{prefix}Mean": mean, f"{prefix}MeanErr": err}, index=sums.index)


def _max_slope(keys: pd.DataFrame, time: np.ndarray, flux: np.ndarray) -> pd.Series:
    """Max ``|Δflux/Δt|`` over consecutive time-ordered points of each group."""
    cols = list(keys.columns)
    frame = keys.assign(_t=time, _f=flux).sort_values([*cols, "_t"], kind="stable")
    same = np.ones(len(frame), dtype=bool)
    for col in cols:
        values = frame[col].to_numpy()
        same[1:] &= values[1:] == values[:-1]
    same[0] = False
    t = frame["_t"].to_numpy()
    f = frame["_f"].to_numpy()
    dt = np.empty_like(t)
    df = np.empty_like(f)
    dt[0] = df[0] = np.nan
    dt[1:] = t[1:] - t[:-1]
    df[1:] = f[1:] - f[:-1]
    valid = same & (dt > 0)
    slope = np.full(len(frame), np.nan)
    slope[valid] = np.abs(df[valid] / dt[valid])
    return frame.assign(_s=slope).groupby(cols, sort=False)["_s"].max()


def _spread_bands(per_band: pd.DataFrame, object_ids: pd.Index) -> pd.DataFrame:
    """Turn an (object, band)-indexed frame into ``{band}_{stat}`` columns per object."""
    wide = per_band.unstack("band")
    out = {}
    for band in BANDS:
        for stat in per_band.columns:
            key = (stat, band)
            out[f"{band}_{stat}"] = (
                wide[key].reindex(object_ids)
                if key in wide.columns
                else pd.Series(np.nan, index=object_ids)
            )
    return pd.DataFrame(out, index=object_ids)


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64, na_value=np.nan)


def compute_dia_object_stats(dia_sources: pd.DataFrame) -> pd.DataFrame:
    """Compute the summary statistics of every DiaObject in ``dia_sources``.

    Parameters
    ----------
    dia_sources : `pandas.DataFrame`
        The full (e.g. 12-month) DiaSource history of the objects to update,
        including this visit's sources; rows need ``diaObjectId``, ``band``,
        ``ra``, ``dec``, ``midpointMjdTai``, ``psfFlux``, ``psfFluxErr`` and
        optionally ``scienceFlux``, ``scienceFluxErr``, ``raErr``, ``decErr``.
        Rows without a ``diaObjectId`` (e.g. Solar System sources) are ignored.

    Returns
    -------
    stats : `pandas.DataFrame`
        One row per ``diaObjectId`` (a column) with the columns described in
        the module docstring.
    """
    needed = {"diaObjectId", "band", "ra", "dec", "midpointMjdTai", "psfFlux", "psfFluxErr"}
    missing = needed - set(dia_sources.columns)
    if missing:
        raise TaskError(f"DiaSource history lacks columns needed for statistics: {sorted(missing)}")
    src = dia_sources[dia_sources["diaObjectId"].notna()]
    unknown = set(src["band"].dropna().unique()) - set(BANDS)
    if unknown or src["band"].isna().any():
        raise TaskError(f"DiaSources with unknown bands {sorted(map(str, unknown))} or no band")
    ids = src["diaObjectId"].to_numpy(np.int64)

    # per-object: position, counts, times
    vec = unit_vectors(src["ra"].to_numpy(np.float64), src["dec"].to_numpy(np.float64))
    ra_err, dec_err = _numeric(src, "raErr"), _numeric(src, "decErr")
    ra_w = np.where(np.isfinite(ra_err) & (ra_err > 0), ra_err**-2.0, 0.0)
    dec_w = np.where(np.isfinite(dec_err) & (dec_err > 0), dec_err**-2.0, 0.0)
    t = _numeric(src, "midpointMjdTai")
    per_obj = pd.DataFrame(
        {"x": vec[:, 0], "y": vec[:, 1], "z": vec[:, 2], "ra_w": ra_w, "dec_w": dec_w}, index=ids
    ).groupby(level=0, sort=True)
    sums = per_obj.sum()
    ra, dec = vectors_to_radec(sums[["x", "y", "z"]].to_numpy())
    object_ids = sums.index.rename("diaObjectId")
    times = pd.Series(t, index=ids).groupby(level=0, sort=True)
    with np.errstate(divide="ignore"):
        stats = pd.DataFrame(
            {
                "ra": ra,
                "dec": dec,
                "raErr": np.where(sums["ra_w"] > 0, sums["ra_w"] ** -0.5, np.nan),
                "decErr": np.where(sums["dec_w"] > 0, sums["dec_w"] ** -0.5, np.nan),
                "nDiaSources": per_obj.size().to_numpy(np.int64),
                "firstDiaSourceMjdTai": times.min().to_numpy(),
                "lastDiaSourceMjdTai": times.max().to_numpy(),
            },
            index=object_ids,
        )

    # per (object, band) over the rows with a finite psfFlux
    flux = _numeric(src, "psfFlux")
    good = np.isfinite(flux)
    keys = pd.DataFrame({"diaObjectId": ids[good], "band": src["band"].to_numpy()[good]})
    f, e = flux[good], _numeric(src, "psfFluxErr")[good]
    grouped = keys.assign(_f=f, _e=e).groupby(["diaObjectId", "band"], sort=False)
    per_band = pd.DataFrame(
        {
            "psfFluxNdata": grouped["_f"].count(),
            "psfFluxSigma": grouped["_f"].std(ddof=1),
            "psfFluxMin": grouped["_f"].min(),
            "psfFluxMax": grouped["_f"].max(),
            "psfFluxErrMean": grouped["_e"].mean(),
        }
    )
    per_band = per_band.join(_weighted_mean(keys, f, e, "psfFlux"))
    per_band = per_band.join(
        _weighted_mean(
            keys,
            _numeric(src, "scienceFlux")[good],
            _numeric(src, "scienceFluxErr")[good],
            "scienceFlux",
        )
    )
    per_band["psfFluxMaxSlope"] = _max_slope(keys, t[good], f)
    wide = _spread_bands(per_band[list(BAND_STAT_NAMES)], object_ids)
    for band in BANDS:
        col = f"{band}_psfFluxNdata"
        wide[col] = wide[col].fillna(0).astype(np.int64)
    return pd.concat([stats, wide], axis=1).reset_index()


def compute_forced_flux_stats(dia_forced_sources: pd.DataFrame) -> pd.DataFrame:
    """Per-band weighted mean forced difference-image flux of each DiaObject.

    Parameters
    ----------
    dia_forced_sources : `pandas.DataFrame`
        DiaForcedSources with ``diaObjectId``, ``band``, ``psfFlux``, ``psfFluxErr``.

    Returns
    -------
    stats : `pandas.DataFrame`
        ``diaObjectId`` and ``{band}_fpFluxMean``, ``{band}_fpFluxMeanErr``.
    """
    if len(dia_forced_sources) == 0:
        return pd.DataFrame({"diaObjectId": pd.Series([], dtype=np.int64)})
    keys = pd.DataFrame(
        {
            "diaObjectId": dia_forced_sources["diaObjectId"].to_numpy(np.int64),
            "band": dia_forced_sources["band"].to_numpy(),
        }
    )
    per_band = _weighted_mean(
        keys,
        _numeric(dia_forced_sources, "psfFlux"),
        _numeric(dia_forced_sources, "psfFluxErr"),
        "fpFlux",
    )
    object_ids = pd.Index(np.unique(keys["diaObjectId"]), name="diaObjectId")
    return _spread_bands(per_band, object_ids).reset_index()
