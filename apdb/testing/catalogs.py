"""Synthetic APDB catalogs with known content, for tests and benchmarks.

The frames carry the columns `Apdb.store` requires plus a realistic set of
optional ones (fluxes, errors, flags, band); values are drawn from a seeded
generator so that a test can compare what it reads back with what it wrote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from apdb.schema import BANDS, table_columns

__all__ = [
    "fill_all_columns",
    "random_positions",
    "make_dia_objects",
    "make_dia_sources",
    "make_dia_forced_sources",
]


def random_positions(
    n: int, ra: float, dec: float, radius: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions inside a cone (degrees)."""
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    phi = rng.uniform(0.0, 2 * np.pi, n)
    dec_out = dec + r * np.sin(phi)
    ra_out = (ra + r * np.cos(phi) / np.cos(np.radians(dec_out))) % 360.0
    return ra_out, dec_out


def make_dia_objects(
    ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, rng: np.random.Generator, n_sources: int = 1
) -> pd.DataFrame:
    """DiaObjects with per-band flux statistics."""
    n = len(ids)
    df = pd.DataFrame(
        {
            "diaObjectId": np.asarray(ids, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "raErr": rng.uniform(1e-5, 3e-5, n).astype(np.float32),
            "decErr": rng.uniform(1e-5, 3e-5, n).astype(np.float32),
            "nDiaSources": np.full(n, n_sources, dtype=np.int32),
            "firstDiaSourceMjdTai": np.full(n, 60000.0),
            "lastDiaSourceMjdTai": np.full(n, 60000.0),
        }
    )
    for band in BANDS:
        df[f"{band}_psfFluxMean"] = rng.normal(1000.0, 100.0, n).astype(np.float32)
        df[f"{band}_psfFluxMeanErr"] = rng.uniform(5.0, 15.0, n).astype(np.float32)
        df[f"{band}_psfFluxNdata"] = np.full(n, n_sources, dtype=np.int32)
    return df


def _visit_columns(
    object_ids: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    visit: int,
    detector: int,
    mjd: float,
    band: str,
) -> dict[str, object]:
    """Columns shared by DiaSources and DiaForcedSources of one visit/detector."""
    n = len(object_ids)
    return {
        "diaObjectId": np.asarray(object_ids, dtype=np.int64),
        "visit": np.full(n, visit, dtype=np.int64),
        "detector": np.full(n, detector, dtype=np.int16),
        "band": band,
        "midpointMjdTai": np.full(n, mjd),
        "ra": ra,
        "dec": dec,
    }


def make_dia_sources(
    ids: np.ndarray,
    object_ids: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    visit: int,
    detector: int,
    mjd: float,
    rng: np.random.Generator,
    band: str = "r",
) -> pd.DataFrame:
    """DiaSources of one visit/detector."""
    n = len(ids)
    return pd.DataFrame(
        {
            "diaSourceId": np.asarray(ids, dtype=np.int64),
            **_visit_columns(object_ids, ra, dec, visit, detector, mjd, band),
            "raErr": rng.uniform(1e-5, 3e-5, n).astype(np.float32),
            "decErr": rng.uniform(1e-5, 3e-5, n).astype(np.float32),
            "x": rng.uniform(0, 4000, n).astype(np.float32),
            "y": rng.uniform(0, 4000, n).astype(np.float32),
            "psfFlux": rng.normal(1000.0, 50.0, n).astype(np.float32),
            "psfFluxErr": rng.uniform(5.0, 15.0, n).astype(np.float32),
            "scienceFlux": rng.normal(5000.0, 50.0, n).astype(np.float32),
            "scienceFluxErr": rng.uniform(5.0, 15.0, n).astype(np.float32),
            "snr": rng.uniform(5.0, 100.0, n).astype(np.float32),
            "bboxSize": rng.integers(15, 60, n).astype(np.int32),
            "isDipole": rng.uniform(size=n) < 0.05,
            "pixelFlags_edge": rng.uniform(size=n) < 0.01,
        }
    )


def make_dia_forced_sources(
    ids: np.ndarray,
    object_ids: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    visit: int,
    detector: int,
    mjd: float,
    rng: np.random.Generator,
    band: str = "r",
) -> pd.DataFrame:
    """DiaForcedSources of one visit/detector."""
    n = len(ids)
    return pd.DataFrame(
        {
            "diaForcedSourceId": np.asarray(ids, dtype=np.int64),
            **_visit_columns(object_ids, ra, dec, visit, detector, mjd, band),
            "psfFlux": rng.normal(100.0, 20.0, n).astype(np.float32),
            "psfFluxErr": rng.uniform(5.0, 15.0, n).astype(np.float32),
            "scienceFlux": rng.normal(5000.0, 50.0, n).astype(np.float32),
            "scienceFluxErr": rng.uniform(5.0, 15.0, n).astype(np.float32),
        }
    )


def fill_all_columns(table: str, df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Add every other schema column with random values (for full-width benchmarks).

    Floats get normal deviates, integers small counts, booleans False, and
    free-text columns stay absent (NULL).
    """
    out = df.copy()
    n = len(df)
    extra = {}
    for col in table_columns(table):
        if col.name in out.columns or col.name == "pixelId" or col.name.startswith("validity"):
            continue
        if col.datatype in ("double", "float"):
            extra[col.name] = rng.normal(size=n).astype(col.numpy_dtype)
        elif col.datatype in ("long", "int", "short"):
            extra[col.name] = np.ones(n, dtype=col.numpy_dtype)
        elif col.datatype == "boolean":
            extra[col.name] = np.zeros(n, dtype=bool)
    for name in (
        "ssObjectId",
        "parentDiaSourceId",
        "timeWithdrawnMjdTai",
        "ssObjectReassocTimeMjdTai",
    ):
        extra.pop(name, None)
    return pd.concat([out, pd.DataFrame(extra, index=out.index)], axis=1)
