"""Detection catalogs (Parquet or CSV) into APDB DiaSource rows.

`read_catalog` reads the file; `to_dia_sources` applies a
`tasks.ingest.mapping.ColumnMapping`: fluxes in nJy (from magnitudes or
flux units), the exposure midpoint as TAI MJD, bands from the user's
values, visits from a column or from the time, and ``diaSourceId`` from a
column or made from visit, detector and row (`catalog_ids`).  Rows without
a flux (non-detections, upper limits) are dropped and counted.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.time import Time

from tasks.association.diaobject_stats import BANDS
from tasks.ingest.errors import IngestError
from tasks.ingest.mapping import AB_NJY_ZERO_POINT, FLUX_UNITS_NJY, ColumnMapping

__all__ = ["read_catalog", "to_dia_sources", "catalog_ids", "mag_to_njy", "DIA_SOURCE_COLUMNS"]

_log = logging.getLogger(__name__)

DIA_SOURCE_COLUMNS = [
    "diaSourceId",
    "visit",
    "detector",
    "band",
    "midpointMjdTai",
    "ra",
    "dec",
    "psfFlux",
    "psfFluxErr",
]
"""Columns every converted catalog has (plus ``x``, ``y``, ``raErr``, ``decErr`` when mapped)."""

_POSITIVE = {"t", "1", "+", "true", "1.0"}
_NEGATIVE = {"f", "0", "-", "false", "0.0"}
_SEQUENCE_BITS = 20
_MAX_DETECTORS = 1000


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Read a Parquet (``.parquet``, ``.pq``) or CSV (``.csv``, ``.csv.gz``) catalog."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"no such catalog: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read the catalog {path}: {exc}") from None
    raise IngestError(f"unknown catalog format {path.name}: expected .parquet or .csv")


def mag_to_njy(mag: np.ndarray, mag_err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error to flux and error in nJy."""
    flux = np.power(10.0, (AB_NJY_ZERO_POINT - np.asarray(mag, float)) / 2.5)
    return flux, flux * math.log(10.0) / 2.5 * np.asarray(mag_err, float)


def catalog_ids(visit: np.ndarray, detector: np.ndarray) -> np.ndarray:
    """Return unique int64 ids ``((visit * 1000 + detector) << 20) + n``, n the row in its group."""
    frame = pd.DataFrame({"visit": visit, "detector": detector})
    seq = frame.groupby(["visit", "detector"]).cumcount().to_numpy(np.int64)
    if (seq >= 2**_SEQUENCE_BITS).any():
        raise IngestError(f"more than {2**_SEQUENCE_BITS} detections in one visit/detector")
    key = visit.astype(np.int64) * _MAX_DETECTORS + detector.astype(np.int64)
    if (key >= 2 ** (63 - _SEQUENCE_BITS)).any():
        raise IngestError("visit numbers too large to make ids: map a diaSourceId column")
    return (key << _SEQUENCE_BITS) + seq


def _column(df: pd.DataFrame, mapping: ColumnMapping, name: str) -> pd.Series:
    source = mapping.columns[name]
    if source not in df.columns:
        raise IngestError(f"the catalog has no column {source!r} (mapped to {name})")
    return df[source]


def _numeric(df: pd.DataFrame, mapping: ColumnMapping, name: str) -> np.ndarray:
    """Return a mapped column as floats (empty cells NaN; text that is no number: an error)."""
    raw = _column(df, mapping, name)
    values = pd.to_numeric(raw, errors="coerce")
    unparsable = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if unparsable.any():
        odd = sorted({str(v) for v in raw[unparsable]})[:5]
        raise IngestError(
            f"column {mapping.columns[name]!r} (mapped to {name}) holds values that are not "
            f"numbers: {odd}"
        )
    return values.to_numpy(np.float64, na_value=np.nan)


def _bands(df: pd.DataFrame, mapping: ColumnMapping) -> np.ndarray:
    raw = _column(df, mapping, "band")
    text = [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in raw]
    if mapping.bands is not None:
        unknown = sorted(set(text) - set(mapping.bands))
        if unknown:
            raise IngestError(f"band values {unknown[:5]} are not in the mapping's bands")
        text = [mapping.bands[v] for v in text]
    bad = sorted(set(text) - set(BANDS))
    if bad:
        raise IngestError(
            f"unknown band(s) {bad[:5]}; expected {list(BANDS)} (map them with bands)"
        )
    return text


def _signs(df: pd.DataFrame, mapping: ColumnMapping) -> np.ndarray:
    raw = _column(df, mapping, "sign").astype(str).str.strip().str.lower().to_numpy()
    sign = np.where(np.isin(raw, list(_POSITIVE)), 1.0, np.nan)
    sign[np.isin(raw, list(_NEGATIVE))] = -1.0
    if np.isnan(sign).any():
        odd = sorted({str(v) for v in raw[np.isnan(sign)]})[:5]
        raise IngestError(
            f"sign values {odd} are neither positive (t, 1, +) nor negative (f, 0, -)"
        )
    return sign


def _midpoints(df: pd.DataFrame, mapping: ColumnMapping) -> np.ndarray:
    t = _numeric(df, mapping, "time")
    if not np.isfinite(t).all():
        raise IngestError(f"{int((~np.isfinite(t)).sum())} detections have no time")
    mjd = Time(t, format=mapping.time_format, scale=mapping.time_scale).tai.mjd
    if mapping.time_reference == "start":
        if isinstance(mapping.exposure_time, str):
            if mapping.exposure_time not in df.columns:
                raise IngestError(
                    f"the catalog has no exposure-time column {mapping.exposure_time!r}"
                )
            exp = pd.to_numeric(df[mapping.exposure_time], errors="coerce").to_numpy(float)
            if not np.isfinite(exp).all():
                raise IngestError("some detections have no exposure time")
        else:
            exp = np.full(len(df), float(mapping.exposure_time))
        mjd = mjd + 0.5 * exp / 86400.0
    return np.asarray(mjd, dtype=np.float64)


def to_dia_sources(
    df: pd.DataFrame, mapping: ColumnMapping, keep: list[str] | None = None
) -> pd.DataFrame:
    """Convert a user's detection table to DiaSource rows.

    Parameters
    ----------
    df : `pandas.DataFrame`
        The catalog, one row per detection.
    mapping : `ColumnMapping`
    keep : `list` [`str`], optional
        Catalog columns carried through unchanged (e.g. the user's own ids).

    Returns
    -------
    sources : `pandas.DataFrame`
        `DIA_SOURCE_COLUMNS` plus the optional mapped columns, sorted by
        time then visit, detector and id.

    Raises
    ------
    IngestError
        Missing columns, unknown bands or signs, bad coordinates or errors,
        duplicate ids.
    """
    if not isinstance(df, pd.DataFrame):
        raise IngestError(f"expected a DataFrame, got {type(df).__name__}")
    flux = _numeric(df, mapping, "flux")
    has_flux = np.isfinite(flux)
    if not has_flux.all():
        _log.info("%d rows without a flux (non-detections) dropped", int((~has_flux).sum()))
    df = df.loc[has_flux].reset_index(drop=True)
    flux, err = flux[has_flux], _numeric(df, mapping, "fluxErr")
    if mapping.flux_unit == "mag":
        flux, err = mag_to_njy(flux, err)
    else:
        flux, err = (
            flux * FLUX_UNITS_NJY[mapping.flux_unit],
            err * FLUX_UNITS_NJY[mapping.flux_unit],
        )
    if "sign" in mapping.columns:
        flux = flux * _signs(df, mapping)
    if not (np.isfinite(err) & (err > 0)).all():
        raise IngestError("flux errors must be finite and positive")
    ra, dec = _numeric(df, mapping, "ra"), _numeric(df, mapping, "dec")
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0))
    if bad.any():
        raise IngestError(
            f"{int(bad.sum())} detections have invalid ra/dec "
            f"(first row {int(np.flatnonzero(bad)[0])})"
        )
    out = pd.DataFrame(
        {
            "band": _bands(df, mapping),
            "midpointMjdTai": _midpoints(df, mapping),
            "ra": np.mod(ra, 360.0),
            "dec": dec,
            "psfFlux": flux,
            "psfFluxErr": err,
        }
    )
    if "detector" in mapping.columns:
        det = _numeric(df, mapping, "detector")
        if not (
            np.isfinite(det) & (det >= 0) & (det < _MAX_DETECTORS) & (det == np.round(det))
        ).all():
            raise IngestError(f"detector values must be integers in [0, {_MAX_DETECTORS})")
        out["detector"] = det.astype(np.int64)
    else:
        out["detector"] = np.zeros(len(out), dtype=np.int64)
    if "visit" in mapping.columns:
        visit = _numeric(df, mapping, "visit")
        if not (np.isfinite(visit) & (visit >= 0)).all():
            raise IngestError("visit values must be non-negative integers")
        out["visit"] = visit.astype(np.int64)
    else:
        seconds = out["midpointMjdTai"].to_numpy() * 86400.0 / mapping.visit_resolution_seconds
        out["visit"] = np.round(seconds).astype(np.int64)
    if "diaSourceId" in mapping.columns:
        ids = pd.to_numeric(_column(df, mapping, "diaSourceId"), errors="coerce")
        if ids.isna().any():
            raise IngestError("some detections have no diaSourceId")
        out["diaSourceId"] = ids.astype(np.int64).to_numpy()
    else:
        out["diaSourceId"] = catalog_ids(out["visit"].to_numpy(), out["detector"].to_numpy())
    if out["diaSourceId"].duplicated().any():
        dups = out.loc[out["diaSourceId"].duplicated(), "diaSourceId"].head(5).tolist()
        raise IngestError(f"duplicate diaSourceId {dups}")
    for name in ("x", "y", "raErr", "decErr"):
        if name in mapping.columns:
            out[name] = _numeric(df, mapping, name)
    for name in keep or []:
        if name not in df.columns:
            raise IngestError(f"the catalog has no column {name!r} to keep")
        out[name] = df[name].to_numpy()
    optional = [c for c in ("x", "y", "raErr", "decErr") if c in out]
    out = out[DIA_SOURCE_COLUMNS + optional + list(keep or [])]
    return out.sort_values(["midpointMjdTai", "visit", "detector", "diaSourceId"]).reset_index(
        drop=True
    )
