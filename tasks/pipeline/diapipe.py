"""The per-visit, per-detector DIA pipeline: association, statistics, forced photometry, store.

`DiaPipelineTask` follows Rubin's ``lsst.ap.association.DiaPipelineTask``:

1. load from the APDB the DiaObjects in the detector footprint (padded by
   ``regionMarginArcsec``) and the history window of their DiaSources and
   DiaForcedSources (the APDB's configured window unless ``historyMonths``
   is set; kept for the alert packager);
2. associate the new DiaSources with predicted Solar System objects
   (`SsSingleFrameAssociationTask`); those never seed DiaObjects;
3. associate the rest with the DiaObjects (`AssociationTask`, one-to-one);
4. unassociated sources without bad flags seed new DiaObjects
   (``diaObjectId = diaSourceId``); unassociated flagged sources are dropped;
5. recompute the summary statistics of every touched DiaObject from its
   history plus this visit (`tasks.association.diaobject_stats`);
6. forced photometry (`tasks.forcedphot.ForcedPhotCcdFromDataFrameTask`) of
   the DiaObjects on the detector with at least ``forcedPhotMinDetections``
   good detections, on the difference and the science image;
7. store everything with one `apdb.Apdb.store` call (one transaction).

A visit/detector already in the APDB is refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.time import Time
from pydantic import Field

from apdb.sky import footprint_region
from tasks.association.association import AssociationConfig, AssociationTask
from tasks.association.diaobject_stats import (
    BANDS,
    STAT_INPUT_COLUMNS,
    assign_new_dia_objects,
    compute_dia_object_stats,
    compute_forced_flux_stats,
)
from tasks.association.ssoassociation import (
    SsSingleFrameAssociationConfig,
    SsSingleFrameAssociationTask,
)
from tasks.core.base import Result, Struct, Task, TaskConfig, TaskError
from tasks.forcedphot import ForcedPhotCcdFromDataFrameConfig, ForcedPhotCcdFromDataFrameTask

if TYPE_CHECKING:
    from apdb import Apdb
    from tasks.images import Exposure

__all__ = [
    "DiaPipelineConfig",
    "DiaPipelineError",
    "DiaPipelineResult",
    "DiaPipelineTask",
    "VisitAlreadyStoredError",
]

_REQUIRED_SOURCE_COLUMNS = ("diaSourceId", "ra", "dec", "psfFlux", "psfFluxErr")


class DiaPipelineError(TaskError):
    """Invalid input to the DIA pipeline."""


@dataclass
class DiaPipelineResult(Result):
    """What `DiaPipelineTask.run` did for one visit/detector (Rubin's result names).

    Attributes
    ----------
    associatedDiaSources : `pandas.DataFrame`
        Every DiaSource of this visit stored in the APDB (with its
        ``diaObjectId``, or ``ssObjectId`` for a Solar System match).
    newDiaObjects : `pandas.DataFrame`
        The DiaObjects this visit created.
    diaObjects : `pandas.DataFrame`
        The new and updated latest DiaObject versions that were stored.
    loadedDiaObjects : `pandas.DataFrame`
        The DiaObjects read from the APDB in the padded footprint.
    diaForcedSources : `pandas.DataFrame`
        Forced measurements stored for this visit.
    ssSources : `pandas.DataFrame`
        SSSource rows of the Solar System matches.
    diaSourceHistory, diaForcedSourceHistory : `pandas.DataFrame`
        The history read from the APDB before the store (for the alerts).
    unassociatedSsObjects : `pandas.DataFrame`
        Predicted Solar System objects that matched no DiaSource.
    droppedDiaSources : `pandas.DataFrame`
        Unassociated DiaSources with bad flags (not stored).
    template : `object`
        The template passed in (for the alert cutouts).
    nNewDiaObjects, nUpdatedDiaObjects, nUnassociatedDiaObjects : `int`
        DiaObjects created, updated, and loaded but not matched.
    nAssociatedSsObjects, nTotalSsObjects : `int`
        Solar System matches, and predicted objects in the footprint.
    nDroppedDiaSources, nDiaForcedSources : `int`
        Lengths of ``droppedDiaSources`` and ``diaForcedSources``.
    """

    associatedDiaSources: pd.DataFrame
    newDiaObjects: pd.DataFrame
    diaObjects: pd.DataFrame
    loadedDiaObjects: pd.DataFrame
    diaForcedSources: pd.DataFrame
    ssSources: pd.DataFrame
    diaSourceHistory: pd.DataFrame
    diaForcedSourceHistory: pd.DataFrame
    unassociatedSsObjects: pd.DataFrame
    droppedDiaSources: pd.DataFrame
    template: Any
    nNewDiaObjects: int
    nUpdatedDiaObjects: int
    nUnassociatedDiaObjects: int
    nAssociatedSsObjects: int
    nTotalSsObjects: int
    nDroppedDiaSources: int
    nDiaForcedSources: int


class VisitAlreadyStoredError(DiaPipelineError):
    """The visit/detector is already in the APDB; nothing was written."""

    def __init__(self, visit: int, detector: int, duplicate_ids: list[int]):
        self.visit = visit
        self.detector = detector
        self.duplicate_ids = duplicate_ids
        shown = ", ".join(map(str, duplicate_ids[:10]))
        more = f" (and {len(duplicate_ids) - 10} more)" if len(duplicate_ids) > 10 else ""
        detail = (
            f"; {len(duplicate_ids)} of its DiaSources are stored: diaSourceId {shown}{more}"
            if duplicate_ids
            else ""
        )
        super().__init__(
            f"visit {visit} detector {detector} is already stored in the APDB{detail}; "
            "nothing was written"
        )


class DiaPipelineConfig(TaskConfig):
    """Configuration of `DiaPipelineTask`."""

    ssoAssociation: SsSingleFrameAssociationConfig = SsSingleFrameAssociationTask.makeField(
        "Association with predicted Solar System object positions."
    )
    associator: AssociationConfig = AssociationTask.makeField(
        "One-to-one association of DiaSources with DiaObjects."
    )
    forcedPhot: ForcedPhotCcdFromDataFrameConfig = ForcedPhotCcdFromDataFrameTask.makeField(
        "Forced photometry of DiaObjects on the difference and science images."
    )
    doSolarSystemAssociation: bool = Field(
        True, description="Associate with Solar System objects when predictions are given."
    )
    doRunForcedMeasurement: bool = Field(
        True, description="Run forced photometry at the DiaObject positions."
    )
    regionMarginArcsec: float = Field(
        20.0, ge=0.0, description="Padding of the detector footprint for loading DiaObjects."
    )
    historyMonths: int | None = Field(
        None,
        ge=0,
        description="Months (30 days) of DiaSource/DiaForcedSource history to load; None: "
        "the APDB's own windows (ApdbConfig.dia_source_history_months and "
        "dia_forced_source_history_months, 12 by default).",
    )
    forcedPhotMinDetections: int = Field(
        2,
        ge=1,
        description=(
            "Forced photometry only for DiaObjects with at least this many good "
            "(unflagged) DiaSources in the history window, this visit included."
        ),
    )
    badFlags: list[str] = Field(
        default_factory=lambda: [
            "pixelFlags_bad",
            "pixelFlags_crCenter",
            "pixelFlags_nodataCenter",
            "pixelFlags_saturatedCenter",
            "pixelFlags_offimage",
        ],
        description=(
            "DiaSource flag columns that make a detection not good: such sources never seed "
            "a DiaObject and do not count towards forcedPhotMinDetections (absent columns: "
            "not set)."
        ),
    )


class DiaPipelineTask(Task):
    """Associate one visit/detector's DiaSources, update DiaObjects, store to the APDB."""

    ConfigClass = DiaPipelineConfig
    _DefaultName = "diaPipe"
    _subtask_classes = {
        "ssoAssociation": SsSingleFrameAssociationTask,
        "associator": AssociationTask,
        "forcedPhot": ForcedPhotCcdFromDataFrameTask,
    }
    config: DiaPipelineConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("ssoAssociation")
        self.makeSubtask("associator")
        self.makeSubtask("forcedPhot")

    def run(
        self,
        diaSourceTable: pd.DataFrame,
        diffIm: Exposure | None,
        exposure: Exposure,
        template: Exposure | None,
        apdb: Apdb,
        solarSystemObjectTable: pd.DataFrame | None = None,
    ) -> DiaPipelineResult:
        """Process one visit/detector's DiaSources and store the results.

        Parameters
        ----------
        diaSourceTable : `pandas.DataFrame`
            New DiaSources of this visit/detector (APDB DiaSource columns).
        diffIm : `tasks.images.Exposure`
            Difference image (forced ``psfFlux``).
        exposure : `tasks.images.Exposure`
            Calibrated science exposure with WCS, bbox, visit info, detector
            and PSF (forced ``scienceFlux``).
        template : `tasks.images.Exposure` or `None`
            Template; not measured here, passed through for the alerts.
        apdb : `apdb.Apdb`
            The database to read from and store into.
        solarSystemObjectTable : `pandas.DataFrame`, optional
            Predicted Solar System object positions for this visit.

        Returns
        -------
        result : `DiaPipelineResult`
            The stored catalogs, the history loaded before the store, and
            the counts.
        """
        visit, detector, band, visit_time = self._visit_of(exposure)
        if self.config.doRunForcedMeasurement and diffIm is None:
            raise DiaPipelineError(
                "forced photometry needs the difference image (or set doRunForcedMeasurement=False)"
            )
        sources = self._prepare_sources(diaSourceTable, visit, detector, band, visit_time)
        self._check_not_stored(apdb, visit, detector, visit_time, exposure, sources)

        with self.timer("loadApdb"):
            region = footprint_region(exposure.wcs, exposure.bbox, self.config.regionMarginArcsec)
            months = self.config.historyMonths
            loaded_objects = apdb.get_dia_objects(region)
            source_history = apdb.get_dia_sources(visit_time, region=region, months=months)
            forced_history = apdb.get_dia_forced_sources(visit_time, region=region, months=months)

        with self.timer("associate"):
            sso = self._sso_association(exposure, sources, band, solarSystemObjectTable)
            assoc = self.associator.run(sso.unAssocDiaSources, loaded_objects)
            unassociated = assoc.unAssocDiaSources
            bad = self._bad(unassociated)
            new_sources = assign_new_dia_objects(unassociated.loc[~bad])
            dropped = pd.concat([assoc.droppedDiaSources, unassociated.loc[bad]])
            if len(dropped):
                self.log.warning(
                    "%d DiaSources not stored: %d with bad coordinates, %d flagged and "
                    "unassociated",
                    len(dropped),
                    len(assoc.droppedDiaSources),
                    int(bad.sum()),
                )
            object_sources = pd.concat([assoc.matchedDiaSources, new_sources], ignore_index=True)
            all_sources = _concat([object_sources, sso.ssoAssocDiaSources])

        with self.timer("diaObjectStats"):
            touched = object_sources["diaObjectId"].to_numpy(np.int64)
            previous = source_history[source_history["diaObjectId"].isin(touched)]
            history = _concat([_narrow(previous), _narrow(object_sources)])
            dia_objects = compute_dia_object_stats(history)
            # what the store will record (it sets the column itself)
            dia_objects["validityStartMjdTai"] = visit_time.mjd

        forced = self._forced_photometry(
            loaded_objects, dia_objects, source_history, object_sources, exposure, diffIm
        )
        if len(forced) and len(dia_objects):
            fp_history = _concat([forced_history, forced])
            fp_history = fp_history[fp_history["diaObjectId"].isin(touched)]
            fp_stats = compute_forced_flux_stats(fp_history)
            dia_objects = dia_objects.merge(fp_stats, on="diaObjectId", how="left")

        with self.timer("store"):
            apdb.store(visit_time, dia_objects, all_sources, forced, sso.associatedSsSources)

        new_ids = new_sources["diaObjectId"].to_numpy(np.int64)
        n_new = len(new_ids)
        self.metadata.update(
            numNewDiaObjects=n_new,
            numUpdatedDiaObjects=assoc.nUpdatedDiaObjects,
            numDiaForcedSources=len(forced),
            numAssociatedSsObjects=sso.nAssociatedSsObjects,
            numDroppedDiaSources=len(dropped),
        )
        return DiaPipelineResult(
            associatedDiaSources=all_sources,
            newDiaObjects=dia_objects[dia_objects["diaObjectId"].isin(new_ids)],
            diaObjects=dia_objects,
            loadedDiaObjects=loaded_objects,
            diaForcedSources=forced,
            ssSources=sso.associatedSsSources,
            diaSourceHistory=source_history,
            diaForcedSourceHistory=forced_history,
            unassociatedSsObjects=sso.unassociatedSsObjects,
            droppedDiaSources=dropped,
            template=template,
            nNewDiaObjects=n_new,
            nUpdatedDiaObjects=assoc.nUpdatedDiaObjects,
            nUnassociatedDiaObjects=assoc.nUnassociatedDiaObjects,
            nAssociatedSsObjects=sso.nAssociatedSsObjects,
            nTotalSsObjects=sso.nTotalSsObjects,
            nDroppedDiaSources=len(dropped),
            nDiaForcedSources=len(forced),
        )

    # -- steps -----------------------------------------------------------
    def _visit_of(self, exposure) -> tuple[int, int, str, Time]:
        info = getattr(exposure, "visit_info", None)
        if info is None or getattr(exposure, "detector", None) is None:
            raise DiaPipelineError("the science exposure needs visit_info and detector")
        if exposure.wcs is None:
            raise DiaPipelineError("the science exposure has no WCS")
        band = exposure.band or info.band
        if band not in BANDS:
            raise DiaPipelineError(f"unknown band {band!r}; expected one of {BANDS}")
        return int(info.visit_id), int(exposure.detector), band, info.midpoint.tai

    def _prepare_sources(
        self, table: pd.DataFrame, visit: int, detector: int, band: str, visit_time: Time
    ) -> pd.DataFrame:
        """Validate the DiaSource table and fill the per-visit columns."""
        if not isinstance(table, pd.DataFrame):
            raise DiaPipelineError(f"diaSourceTable must be a DataFrame, got {type(table)}")
        missing = [c for c in _REQUIRED_SOURCE_COLUMNS if c not in table.columns]
        if missing:
            raise DiaPipelineError(f"diaSourceTable lacks required columns {missing}")
        ids = table["diaSourceId"]
        if ids.isna().any() or ids.duplicated().any():
            dups = ids[ids.duplicated()].unique()[:10].tolist()
            raise DiaPipelineError(f"diaSourceTable has missing or duplicate diaSourceId {dups}")
        sources = table.drop(columns=["diaObjectId", "ssObjectId"], errors="ignore").copy()
        for column, value in (("visit", visit), ("detector", detector), ("band", band)):
            if column not in sources.columns:
                sources[column] = value
            elif not (sources[column] == value).all():
                wrong = sorted(set(sources[column][sources[column] != value].astype(str)))
                raise DiaPipelineError(
                    f"diaSourceTable {column} values {wrong[:5]} differ from the exposure's {value}"
                )
        if "midpointMjdTai" not in sources.columns:
            sources["midpointMjdTai"] = visit_time.mjd
        if "timeProcessedMjdTai" not in sources.columns:
            sources["timeProcessedMjdTai"] = Time.now().tai.mjd
        return sources.reset_index(drop=True)

    def _check_not_stored(self, apdb, visit, detector, visit_time, exposure, sources) -> None:
        if not apdb.contains_visit_detector(visit, detector):
            return
        # name the duplicates: this visit's stored sources in the footprint
        region = footprint_region(exposure.wcs, exposure.bbox, self.config.regionMarginArcsec)
        stored = apdb.get_dia_sources(visit_time + 1.0 * u.s, region=region, months=1)
        stored = stored[(stored["visit"] == visit) & (stored["detector"] == detector)]
        dup = np.intersect1d(stored["diaSourceId"].to_numpy(np.int64), sources["diaSourceId"])
        raise VisitAlreadyStoredError(visit, detector, dup.tolist())

    def _sso_association(self, exposure, sources, band, sso_table) -> Struct:
        if not self.config.doSolarSystemAssociation:
            sso_table = None
        return self.ssoAssociation.run(exposure, sources, band, sso_table)

    def _bad(self, sources: pd.DataFrame) -> np.ndarray:
        bad = np.zeros(len(sources), dtype=bool)
        for flag in self.config.badFlags:
            if flag in sources.columns:
                bad |= sources[flag].fillna(False).to_numpy(dtype=bool)
        return bad

    def _forced_photometry(
        self, loaded_objects, dia_objects, source_history, object_sources, exposure, diffIm
    ) -> pd.DataFrame:
        """Measure forced photometry of the objects with enough good detections."""
        if not self.config.doRunForcedMeasurement:
            return pd.DataFrame()
        with self.timer("forcedPhot"):
            good_ids = [
                frame.loc[~self._bad(frame), "diaObjectId"].dropna().to_numpy(np.int64)
                for frame in (source_history, object_sources)
            ]
            ids, counts = np.unique(np.concatenate(good_ids), return_counts=True)
            wanted = ids[counts >= self.config.forcedPhotMinDetections]
            updated_ids = dia_objects["diaObjectId"].to_numpy(np.int64)
            others = loaded_objects[~loaded_objects["diaObjectId"].isin(updated_ids)]
            candidates = _concat(
                [
                    dia_objects[["diaObjectId", "ra", "dec"]],
                    others[["diaObjectId", "ra", "dec"]],
                ]
            )
            candidates = candidates[candidates["diaObjectId"].isin(wanted)]
            if len(candidates) == 0:
                return pd.DataFrame()
            return self.forcedPhot.measure_dia_objects(candidates, exposure, diffIm)


def _narrow(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the columns the statistics read (DiaSource frames are ~100 columns wide)."""
    return frame[[c for c in STAT_INPUT_COLUMNS if c in frame.columns]]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate, ignoring empty frames (keeps dtypes stable)."""
    kept = [f for f in frames if len(f)]
    if not kept:
        return frames[0].iloc[:0].copy() if frames else pd.DataFrame()
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0].reset_index(drop=True)
