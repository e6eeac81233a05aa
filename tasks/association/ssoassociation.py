"""Associate single-frame detections with predicted Solar System object positions.

`SsSingleFrameAssociationTask` follows the Rubin task of the same name
(``lsst.ap.association.SsSingleFrameAssociationTask``): the predicted
positions of Solar System objects (SSOs) for this visit are masked to the
exposure (grown by a margin), each SSO takes its nearest detection within
``maxDistArcSeconds``, and the pairs are assigned greedily by distance,
one-to-one.  Associated detections become SSSources; they never seed
DiaObjects.

The SSO table needs ``ssObjectId``, ``ra``, ``dec`` (predicted ICRS, degrees)
and may carry ``designation``, ``mag`` (predicted V magnitude), and rates
``raRate`` (d(ra)/dt·cos(dec)) and ``decRate`` in degrees per day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from pydantic import Field
from scipy.spatial import cKDTree

from tasks.association.skygeom import (
    chord_for_arcsec,
    chord_to_arcsec,
    tangent_offsets_arcsec,
    unit_vectors,
)
from tasks.core.base import Struct, Task, TaskConfig, TaskError

if TYPE_CHECKING:
    from tasks.images import Exposure

__all__ = ["SsSingleFrameAssociationConfig", "SsSingleFrameAssociationTask"]


class SsSingleFrameAssociationConfig(TaskConfig):
    """Configuration of `SsSingleFrameAssociationTask`."""

    maxDistArcSeconds: float = Field(
        1.0, gt=0.0, description="Largest detection-to-prediction distance that can match (arcsec)."
    )
    maxPixelMargin: int = Field(
        100,
        ge=0,
        description="Margin (pixels) by which the exposure is grown to select predicted SSOs.",
    )


class SsSingleFrameAssociationTask(Task):
    """Associate DiaSources with the predicted positions of Solar System objects."""

    ConfigClass = SsSingleFrameAssociationConfig
    _DefaultName = "ssoAssociation"
    config: SsSingleFrameAssociationConfig

    def run(
        self,
        exposure: Exposure,
        sourceTable: pd.DataFrame,
        band: str,
        solarSystemObjectTable: pd.DataFrame | None = None,
    ) -> Struct:
        """Associate the sources of one exposure with Solar System objects.

        Parameters
        ----------
        exposure : `tasks.images.Exposure`
            Exposure with a WCS and a ``bbox`` (parent pixels).
        sourceTable : `pandas.DataFrame`
            Newly detected sources (``diaSourceId``, ``ra``, ``dec``).
        band : `str`
            Band of the exposure (recorded in the metadata).
        solarSystemObjectTable : `pandas.DataFrame`, optional
            Predicted SSO positions for this visit.  `None` gives a "no work"
            result: every source unassociated, ``noWorkReason`` set.

        Returns
        -------
        result : `tasks.core.base.Struct`
            ``ssoAssocDiaSources`` (sources with ``ssObjectId`` set and
            ``diaObjectId`` NA), ``unAssocDiaSources``, ``associatedSsSources``
            (SSSource rows), ``unassociatedSsObjects`` (SSOs on the exposure
            without a source), ``nTotalSsObjects``, ``nAssociatedSsObjects``,
            ``noWorkReason`` (`None` when the association ran).
        """
        self.metadata["band"] = band
        if solarSystemObjectTable is None:
            self.log.info("no Solar System object table for this visit: nothing to associate")
            return self._no_work(sourceTable, "no Solar System object table was given")
        return self.associateSources(sourceTable, solarSystemObjectTable, exposure)

    def associateSources(
        self,
        sourceTable: pd.DataFrame,
        solarSystemObjectTable: pd.DataFrame,
        exposure: Exposure,
    ) -> Struct:
        """Associate single-image sources with ssObjects.

        Parameters
        ----------
        sourceTable : `pandas.DataFrame`
            Newly detected sources.
        solarSystemObjectTable : `pandas.DataFrame`
            Preloaded Solar System objects expected to be visible in the image.
        exposure : `tasks.images.Exposure`
            The exposure, used to select SSOs that fall on it.

        Returns
        -------
        result : `tasks.core.base.Struct`
            As for `run`.
        """
        with self.timer("ssoAssociation"):
            ssos = self._select_on_exposure(self._check_ssos(solarSystemObjectTable), exposure)
            if "diaSourceId" not in sourceTable.columns:
                raise TaskError("the source table lacks the diaSourceId column")
            src_ra = pd.to_numeric(sourceTable["ra"], errors="coerce").to_numpy(
                np.float64, na_value=np.nan
            )
            src_dec = pd.to_numeric(sourceTable["dec"], errors="coerce").to_numpy(
                np.float64, na_value=np.nan
            )
            src_idx, sso_idx, dist = self._greedy_pairs(src_ra, src_dec, ssos)

        sources = sourceTable.copy()
        ss_ids = np.full(len(sources), -1, dtype=np.int64)
        ss_ids[src_idx] = ssos["ssObjectId"].to_numpy(np.int64)[sso_idx]
        is_sso = ss_ids >= 0
        ss_column = pd.Series(ss_ids, index=sources.index, dtype="Int64")
        ss_column[~is_sso] = pd.NA
        sources["ssObjectId"] = ss_column
        sources["diaObjectId"] = pd.array([pd.NA] * len(sources), dtype="Int64")
        ss_sources = self._make_ss_sources(sources.iloc[src_idx], ssos.iloc[sso_idx], dist)
        unassociated_ssos = ssos.drop(index=ssos.index[sso_idx])
        self.metadata["numTotalSsObjects"] = len(ssos)
        self.metadata["numAssociatedSsObjects"] = len(sso_idx)
        self.log.info(
            "%d of %d Solar System objects on the exposure associated", len(sso_idx), len(ssos)
        )
        unassoc = sources.loc[~is_sso].drop(columns=["ssObjectId", "diaObjectId"])
        return Struct(
            ssoAssocDiaSources=sources.loc[is_sso],
            unAssocDiaSources=unassoc,
            associatedSsSources=ss_sources,
            unassociatedSsObjects=unassociated_ssos,
            nTotalSsObjects=len(ssos),
            nAssociatedSsObjects=len(sso_idx),
            noWorkReason=None,
        )

    # -- helpers -------------------------------------------------------
    def _no_work(self, source_table: pd.DataFrame, reason: str) -> Struct:
        self.metadata["noWorkReason"] = reason
        empty = source_table.iloc[:0].assign(
            ssObjectId=pd.array([], dtype="Int64"), diaObjectId=pd.array([], dtype="Int64")
        )
        return Struct(
            ssoAssocDiaSources=empty,
            unAssocDiaSources=source_table.copy(),
            associatedSsSources=_empty_ss_sources(),
            unassociatedSsObjects=pd.DataFrame(
                {"ssObjectId": pd.Series([], dtype=np.int64), "ra": [], "dec": []}
            ),
            nTotalSsObjects=0,
            nAssociatedSsObjects=0,
            noWorkReason=reason,
        )

    def _check_ssos(self, table: pd.DataFrame) -> pd.DataFrame:
        missing = {"ssObjectId", "ra", "dec"} - set(table.columns)
        if missing:
            raise TaskError(f"Solar System object table lacks columns {sorted(missing)}")
        if table["ssObjectId"].duplicated().any():
            dups = table["ssObjectId"][table["ssObjectId"].duplicated()].unique()[:10].tolist()
            raise TaskError(f"Solar System object table has duplicate ssObjectId values {dups}")
        ra = pd.to_numeric(table["ra"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        dec = pd.to_numeric(table["dec"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        good = np.isfinite(ra) & np.isfinite(dec)
        if not good.all():
            self.log.warning(
                "dropping %d predicted SSO positions that are not finite", (~good).sum()
            )
        return table.loc[good].assign(ra=ra[good], dec=dec[good])

    def _select_on_exposure(self, ssos: pd.DataFrame, exposure: Exposure) -> pd.DataFrame:
        if len(ssos) == 0:
            return ssos
        x, y = exposure.sky_to_pixel(ssos["ra"].to_numpy(), ssos["dec"].to_numpy())
        box = exposure.bbox.grown(self.config.maxPixelMargin)
        inside = np.asarray(box.contains(x, y), dtype=bool) & np.isfinite(x) & np.isfinite(y)
        return ssos.loc[inside]

    def _greedy_pairs(
        self, src_ra: np.ndarray, src_dec: np.ndarray, ssos: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy one-to-one pairs by increasing distance (arcsec)."""
        finite = np.flatnonzero(np.isfinite(src_ra) & np.isfinite(src_dec))
        empty = np.empty(0, dtype=np.intp)
        if len(finite) == 0 or len(ssos) == 0:
            return empty, empty, np.empty(0)
        src_vec = unit_vectors(src_ra[finite], src_dec[finite])
        sso_vec = unit_vectors(ssos["ra"].to_numpy(), ssos["dec"].to_numpy())
        found = cKDTree(src_vec).query_ball_point(
            sso_vec, chord_for_arcsec(self.config.maxDistArcSeconds), return_sorted=False
        )
        counts = np.fromiter(map(len, found), dtype=np.intp, count=len(found))
        if counts.sum() == 0:
            return empty, empty, np.empty(0)
        sso_i = np.repeat(np.arange(len(ssos)), counts)
        src_i = np.concatenate([f for f in found if f]).astype(np.intp)
        dist = chord_to_arcsec(np.linalg.norm(src_vec[src_i] - sso_vec[sso_i], axis=1))
        order = np.lexsort((src_i, sso_i, dist))  # by distance, ties deterministic
        used_src: set[int] = set()
        used_sso: set[int] = set()
        keep = []
        for k in order:  # one pass over the (few) candidate pairs
            s, o = int(src_i[k]), int(sso_i[k])
            if s not in used_src and o not in used_sso:
                used_src.add(s)
                used_sso.add(o)
                keep.append(k)
        keep_arr = np.asarray(keep, dtype=np.intp)
        return finite[src_i[keep_arr]], sso_i[keep_arr], dist[keep_arr]

    def _make_ss_sources(
        self, sources: pd.DataFrame, ssos: pd.DataFrame, dist: np.ndarray
    ) -> pd.DataFrame:
        """Build SSSource rows (positional offsets in arcsec, rates in deg/day)."""
        if len(sources) == 0:
            return _empty_ss_sources()
        ra, dec = sources["ra"].to_numpy(np.float64), sources["dec"].to_numpy(np.float64)
        eph_ra, eph_dec = ssos["ra"].to_numpy(np.float64), ssos["dec"].to_numpy(np.float64)
        d_east, d_north = tangent_offsets_arcsec(ra, dec, eph_ra, eph_dec)
        coords = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        ecl = coords.barycentricmeanecliptic
        gal = coords.galactic
        out = pd.DataFrame(
            {
                "diaSourceId": sources["diaSourceId"].to_numpy(np.int64),
                "ssObjectId": ssos["ssObjectId"].to_numpy(np.int64),
                "eclLambda": ecl.lon.deg,
                "eclBeta": ecl.lat.deg,
                "galLon": gal.l.deg,
                "galLat": gal.b.deg,
                "ephRa": eph_ra,
                "ephDec": eph_dec,
                "ephOffset": dist,
                "ephOffsetRa": d_east,
                "ephOffsetDec": d_north,
                "diaDistanceRank": np.ones(len(sources), dtype=np.int16),
            }
        )
        if "designation" in ssos.columns:
            out["designation"] = ssos["designation"].to_numpy()
        if "mag" in ssos.columns:
            out["ephVmag"] = pd.to_numeric(ssos["mag"], errors="coerce").to_numpy()
        if {"raRate", "decRate"} <= set(ssos.columns):
            rate_ra = pd.to_numeric(ssos["raRate"], errors="coerce").to_numpy(np.float64)
            rate_dec = pd.to_numeric(ssos["decRate"], errors="coerce").to_numpy(np.float64)
            rate = np.hypot(rate_ra, rate_dec)
            with np.errstate(invalid="ignore", divide="ignore"):
                along = (d_east * rate_ra + d_north * rate_dec) / rate
                cross = (d_north * rate_ra - d_east * rate_dec) / rate
            out["ephRate"] = rate
            out["ephRateRa"] = rate_ra
            out["ephRateDec"] = rate_dec
            out["ephOffsetAlongTrack"] = np.where(rate > 0, along, np.nan)
            out["ephOffsetCrossTrack"] = np.where(rate > 0, cross, np.nan)
        return out


def _empty_ss_sources() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "diaSourceId": pd.Series([], dtype=np.int64),
            "ssObjectId": pd.Series([], dtype=np.int64),
            "ephOffset": pd.Series([], dtype=np.float64),
        }
    )
