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

Per object: ``ra``/``dec`` the inverse-covariance weighted mean position of
its DiaSources (in the tangent plane of their mean unit vector; each source's
covariance from ``raErr``, ``decErr``, ``ra_dec_Cov``), ``raErr``/``decErr``/
``ra_dec_Cov`` the covariance of that mean (``(sum C_i^-1)^-1``: it shrinks as
``1/sqrt(n)`` with the number of detections, which is what lets the
association radius of a well measured object shrink), ``nDiaSources``,
``firstDiaSourceMjdTai``, ``lastDiaSourceMjdTai``.  Sources without a finite
positive ``raErr`` and ``decErr`` do not weigh in the position when others
have them; an object none of whose sources has them gets the plain mean of
the unit vectors and NaN errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from apdb.schema import BANDS
from tasks.association.skygeom import (
    tangent_offsets_arcsec,
    tangent_to_radec,
    unit_vectors,
    vectors_to_radec,
)
from tasks.core.base import TaskError

__all__ = [
    "BANDS",
    "BAND_STAT_NAMES",
    "STAT_INPUT_COLUMNS",
    "assign_new_dia_objects",
    "compute_dia_object_stats",
    "compute_forced_flux_stats",
]

STAT_INPUT_COLUMNS = (
    "diaObjectId",
    "band",
    "ra",
    "dec",
    "midpointMjdTai",
    "psfFlux",
    "psfFluxErr",
    "scienceFlux",
    "scienceFluxErr",
    "raErr",
    "decErr",
    "ra_dec_Cov",
)
"""DiaSource columns the statistics read (the first seven are required)."""

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


class _Groups:
    """Flat (object, band) group keys: ``key = object_position * 6 + band_position``.

    All statistics are ``numpy.bincount`` / ``ufunc.at`` reductions over these
    keys, reshaped to an ``(n_objects, 6)`` array at the end.
    """

    def __init__(self, object_ids: np.ndarray, bands: np.ndarray):
        self.object_ids, obj_pos = np.unique(object_ids, return_inverse=True)
        band_pos = pd.Series(bands).map(_BAND_INDEX).to_numpy()
        if pd.isna(band_pos).any():
            unknown = sorted({str(b) for b in np.asarray(bands)[pd.isna(band_pos)]})
            raise TaskError(f"DiaSources with unknown bands {unknown} (expected {BANDS})")
        self.key = obj_pos.astype(np.int64) * len(BANDS) + band_pos.astype(np.int64)
        self.size = len(self.object_ids) * len(BANDS)

    def sum(self, values: np.ndarray, where: np.ndarray) -> np.ndarray:
        return np.bincount(self.key[where], weights=values[where], minlength=self.size)

    def count(self, where: np.ndarray) -> np.ndarray:
        return np.bincount(self.key[where], minlength=self.size)

    def extreme(self, values: np.ndarray, where: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
        out = np.full(self.size, -np.inf if ufunc is np.maximum else np.inf)
        ufunc.at(out, self.key[where], values[where])
        return np.where(np.isfinite(out), out, np.nan)

    def weighted_mean(
        self, value: np.ndarray, error: np.ndarray, where: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inverse-variance weighted mean and its error ``1/sqrt(sum(w))``."""
        ok = where & np.isfinite(value) & np.isfinite(error) & (error > 0)
        w = np.zeros(len(value))
        w[ok] = 1.0 / error[ok] ** 2
        sum_w = self.sum(w, ok)
        sum_wf = self.sum(w * np.where(ok, value, 0.0), ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (
                np.where(sum_w > 0, sum_wf / sum_w, np.nan),
                np.where(sum_w > 0, 1.0 / np.sqrt(sum_w), np.nan),
            )

    def max_slope(self, time: np.ndarray, flux: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Max ``|Δflux/Δt|`` over consecutive time-ordered points of each group."""
        rows = np.flatnonzero(where)
        order = rows[np.lexsort((time[rows], self.key[rows]))]
        key, t, f = self.key[order], time[order], flux[order]
        valid = (key[1:] == key[:-1]) & (t[1:] > t[:-1])
        slope = np.abs(np.diff(f)[valid] / np.diff(t)[valid])
        out = np.full(self.size, -np.inf)
        np.maximum.at(out, key[1:][valid], slope)
        return np.where(np.isfinite(out), out, np.nan)

    def columns(self, name: str, values: np.ndarray) -> dict[str, np.ndarray]:
        """Spread a per-group array into ``{band}_{name}`` columns."""
        table = values.reshape(len(self.object_ids), len(BANDS))
        return {f"{band}_{name}": table[:, i] for i, band in enumerate(BANDS)}


_BAND_INDEX = {band: i for i, band in enumerate(BANDS)}


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
        One row per ``diaObjectId`` (a column, sorted) with the columns
        described in the module docstring.
    """
    missing = set(STAT_INPUT_COLUMNS[:7]) - set(dia_sources.columns)
    if missing:
        raise TaskError(f"DiaSource history lacks columns needed for statistics: {sorted(missing)}")
    src = dia_sources[dia_sources["diaObjectId"].notna()]
    if src["band"].isna().any():
        raise TaskError("DiaSources without a band cannot enter the statistics")
    groups = _Groups(src["diaObjectId"].to_numpy(np.int64), src["band"].to_numpy())
    n_bands = len(BANDS)
    obj_key = groups.key // n_bands
    n_obj = len(groups.object_ids)

    # per object: weighted mean position and its covariance, counts, times
    position = _mean_positions(src, obj_key, n_obj)
    t = _numeric(src, "midpointMjdTai")
    first = np.full(n_obj, np.inf)
    last = np.full(n_obj, -np.inf)
    np.minimum.at(first, obj_key, t)
    np.maximum.at(last, obj_key, t)
    out: dict[str, np.ndarray] = {
        "diaObjectId": groups.object_ids,
        **position,
        "nDiaSources": np.bincount(obj_key, minlength=n_obj).astype(np.int64),
        "firstDiaSourceMjdTai": first,
        "lastDiaSourceMjdTai": last,
    }

    # per (object, band), over the rows with a finite psfFlux
    flux, err = _numeric(src, "psfFlux"), _numeric(src, "psfFluxErr")
    good = np.isfinite(flux)
    n = groups.count(good)
    mean_f = groups.sum(flux, good) / np.where(n > 0, n, 1)
    resid = np.where(good, flux - mean_f[groups.key], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(n > 1, np.sqrt(groups.sum(resid**2, good) / (n - 1)), np.nan)
        good_err = good & np.isfinite(err)
        err_mean = groups.sum(err, good_err) / groups.count(good_err)
    mean, mean_err = groups.weighted_mean(flux, err, good)
    sci_mean, sci_err = groups.weighted_mean(
        _numeric(src, "scienceFlux"), _numeric(src, "scienceFluxErr"), good
    )
    per_band = {
        "psfFluxMean": mean,
        "psfFluxMeanErr": mean_err,
        "psfFluxSigma": sigma,
        "psfFluxNdata": n.astype(np.int64),
        "psfFluxMin": groups.extreme(flux, good, np.minimum),
        "psfFluxMax": groups.extreme(flux, good, np.maximum),
        "psfFluxMaxSlope": groups.max_slope(t, flux, good),
        "psfFluxErrMean": err_mean,
        "scienceFluxMean": sci_mean,
        "scienceFluxMeanErr": sci_err,
    }
    for name in BAND_STAT_NAMES:
        out.update(groups.columns(name, per_band[name]))
    return pd.DataFrame(out)


def _mean_positions(src: pd.DataFrame, obj_key: np.ndarray, n_obj: int) -> dict[str, np.ndarray]:
    """Inverse-covariance weighted mean position of each object and its covariance.

    Offsets are taken in the tangent plane (east, north; arcsec) about the
    mean unit vector of each object's sources.
    """
    ra_s, dec_s = _numeric(src, "ra"), _numeric(src, "dec")
    vec = unit_vectors(ra_s, dec_s)
    sum_vec = np.column_stack(
        [np.bincount(obj_key, weights=vec[:, i], minlength=n_obj) for i in range(3)]
    )
    ra0, dec0 = vectors_to_radec(sum_vec)
    # each source's covariance on the sky (arcsec^2)
    cos_s = np.cos(np.radians(dec_s))
    sx = _numeric(src, "raErr") * 3600.0 * cos_s
    sy = _numeric(src, "decErr") * 3600.0
    sxy = np.nan_to_num(_numeric(src, "ra_dec_Cov") * 3600.0**2 * cos_s)
    ok = np.isfinite(sx) & (sx > 0) & np.isfinite(sy) & (sy > 0)
    sx, sy = np.where(ok, sx, 1.0), np.where(ok, sy, 1.0)
    sxy = np.clip(np.where(ok, sxy, 0.0), -0.999 * sx * sy, 0.999 * sx * sy)
    det = sx**2 * sy**2 - sxy**2
    ixx, iyy, ixy = sy**2 / det, sx**2 / det, -sxy / det
    dx, dy = tangent_offsets_arcsec(ra_s, dec_s, ra0[obj_key], dec0[obj_key])
    key = obj_key[ok]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(key, weights=values[ok], minlength=n_obj)

    sum_xx, sum_yy, sum_xy = total(ixx), total(iyy), total(ixy)
    bx = total(ixx * dx + ixy * dy)
    by = total(ixy * dx + iyy * dy)
    has = np.bincount(key, minlength=n_obj) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        big_det = np.where(has, sum_xx * sum_yy - sum_xy**2, np.nan)
        cxx, cyy, cxy = sum_yy / big_det, sum_xx / big_det, -sum_xy / big_det
        mx, my = cxx * bx + cxy * by, cxy * bx + cyy * by
    ra, dec = tangent_to_radec(np.where(has, mx, 0.0), np.where(has, my, 0.0), ra0, dec0)
    cos_o = np.cos(np.radians(dec))
    return {
        "ra": ra,
        "dec": dec,
        "raErr": np.sqrt(cxx) / cos_o / 3600.0,
        "decErr": np.sqrt(cyy) / 3600.0,
        "ra_dec_Cov": cxy / cos_o / 3600.0**2,
    }


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
    groups = _Groups(
        dia_forced_sources["diaObjectId"].to_numpy(np.int64),
        dia_forced_sources["band"].to_numpy(),
    )
    everything = np.ones(len(dia_forced_sources), dtype=bool)
    mean, err = groups.weighted_mean(
        _numeric(dia_forced_sources, "psfFlux"),
        _numeric(dia_forced_sources, "psfFluxErr"),
        everything,
    )
    return pd.DataFrame(
        {
            "diaObjectId": groups.object_ids,
            **groups.columns("fpFluxMean", mean),
            **groups.columns("fpFluxMeanErr", err),
        }
    )
