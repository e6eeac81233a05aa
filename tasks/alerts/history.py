"""Turn one visit's catalogues into encoded alert parts, grouped by object.

Every table is Avro-encoded once, column-wise (`tasks.alerts.encoder`).
Histories are sorted by ``diaObjectId`` then time, so each object's
history is one contiguous byte range and the per-alert work is a lookup
and a slice.  Rows of the current visit are removed from the histories (the
alert's ``prv*`` fields hold previous measurements only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord

from tasks.alerts.encoder import EncodedRows, encode_frame
from tasks.alerts.records import _with_index_columns, unused_columns
from tasks.alerts.schema import AlertSchema

__all__ = ["AlertInputs", "group_spans", "prepare_inputs"]


@dataclass
class AlertInputs:
    """Encoded records of one visit/detector, ready to assemble alerts.

    Attributes
    ----------
    sources : `EncodedRows`
        The visit's DiaSources, in input order.
    source_ids, object_ids : `numpy.ndarray`
        Their ``diaSourceId`` and ``diaObjectId`` (0 when none).
    ra, dec, bbox_size : `numpy.ndarray`
        Positions and footprint sizes (for the cutouts).
    objects : `dict` [`int`, `bytes`]
        Encoded DiaObject by id.
    src_history, forced_history : `dict` [`int`, `tuple` [`int`, `bytes`]]
        Per object: number of history rows and their encodings back to back.
    ss_sources : `dict` [`int`, `bytes`]
        Encoded SSSource by ``diaSourceId``.
    unused : `dict` [`str`, `list` [`str`]]
        Input columns no alert field carries, per record type.
    """

    sources: EncodedRows
    source_ids: np.ndarray
    object_ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    bbox_size: np.ndarray
    objects: dict[int, bytes] = field(default_factory=dict)
    src_history: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    forced_history: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    ss_sources: dict[int, bytes] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)


def _ids(series: pd.Series) -> np.ndarray:
    """Integer ids of a nullable id column; nulls become 0."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iu":
        return series.to_numpy(dtype=np.int64)
    null = series.isna().to_numpy()
    if not isinstance(series.dtype, np.dtype) and series.dtype.kind in "iu":  # nullable Int64
        return series.to_numpy(dtype=np.int64, na_value=0)
    if series.dtype.kind == "f":
        return np.where(null, 0, series.to_numpy(dtype=np.float64)).astype(np.int64)
    return np.array(
        [0 if n else int(v) for v, n in zip(series.tolist(), null, strict=True)], np.int64
    )


def group_spans(rows: EncodedRows, keys: np.ndarray) -> dict[int, tuple[int, bytes]]:
    """Per key: ``(count, encodings)`` of the consecutive rows sharing it (keys sorted)."""
    if len(keys) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    return {
        int(keys[s]): (int(e - s), rows.span(s, e))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    }


def _history(
    frame: pd.DataFrame | None,
    wanted: np.ndarray,
    visit: int,
    exclude_ids: np.ndarray | None,
    id_column: str,
) -> pd.DataFrame | None:
    if frame is None or len(frame) == 0:
        return None
    frame = _with_index_columns(frame)
    keep = np.isin(_ids(frame["diaObjectId"]), wanted)
    if "visit" in frame.columns:
        keep &= frame["visit"].to_numpy() != visit
    if exclude_ids is not None and id_column in frame.columns:
        keep &= ~np.isin(_ids(frame[id_column]), exclude_ids)
    frame = frame[keep]
    order = ["diaObjectId"] + (["midpointMjdTai"] if "midpointMjdTai" in frame.columns else [])
    frame = frame.assign(diaObjectId=_ids(frame["diaObjectId"]))
    return frame.sort_values(order, kind="stable")


def _ss_frame(ss: pd.DataFrame, sources: pd.DataFrame) -> pd.DataFrame:
    """Fill the SSSource coordinates the schema requires from the sources' positions."""
    needed = ("eclLambda", "eclBeta", "galLon", "galLat")
    if all(c in ss.columns for c in needed):
        return ss
    pos = sources.set_index("diaSourceId")[["ra", "dec"]]
    pos = pos.reindex(_ids(ss["diaSourceId"]))
    coord = SkyCoord(pos["ra"].to_numpy() * u.deg, pos["dec"].to_numpy() * u.deg, frame="icrs")
    ss = ss.copy()
    if "eclLambda" not in ss.columns or "eclBeta" not in ss.columns:
        ecl = coord.barycentrictrueecliptic
        ss["eclLambda"] = ecl.lon.deg
        ss["eclBeta"] = ecl.lat.deg
    if "galLon" not in ss.columns or "galLat" not in ss.columns:
        gal = coord.galactic
        ss["galLon"] = gal.l.deg
        ss["galLat"] = gal.b.deg
    return ss


def prepare_inputs(
    schema: AlertSchema,
    diaSourceCat: pd.DataFrame,
    diaObjectCat: pd.DataFrame | None,
    diaSrcHistory: pd.DataFrame | None,
    diaForcedSources: pd.DataFrame | None,
    ssSrc: pd.DataFrame | None,
    visit: int,
    defaults: Callable[[str], dict[str, Any]],
    log: logging.Logger,
) -> AlertInputs:
    """Convert the catalogues of one visit into records for `PackageAlertsTask`.

    Parameters
    ----------
    schema : `AlertSchema`
        The alert schema.
    diaSourceCat, diaObjectCat, diaSrcHistory, diaForcedSources, ssSrc
        As for `PackageAlertsTask.run`.
    visit : `int`
        The current visit (its rows are dropped from the histories).
    defaults : callable
        Record type name → defaults for required fields the input lacks.
    log : `logging.Logger`
        Where to report input columns that no alert field carries.

    Returns
    -------
    inputs : `AlertInputs`
    """
    recs = schema.records
    src = _with_index_columns(diaSourceCat)
    n = len(src)
    encoded = encode_frame(src, recs["diaSource"], defaults("diaSource"))
    unused = {"diaSource": unused_columns(src, recs["diaSource"])}
    ra = src["ra"].to_numpy(dtype=np.float64) if n else np.empty(0)
    dec = src["dec"].to_numpy(dtype=np.float64) if n else np.empty(0)
    if "bboxSize" in src.columns:
        bbox = src["bboxSize"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        bbox = np.full(n, np.nan)
    source_ids = _ids(src["diaSourceId"]) if n else np.empty(0, np.int64)
    if "diaObjectId" in src.columns and n:
        object_ids = _ids(src["diaObjectId"])
    else:
        object_ids = np.zeros(n, np.int64)
    inputs = AlertInputs(encoded, source_ids, object_ids, ra, dec, bbox, unused=unused)
    if n == 0:
        return inputs
    wanted = np.unique(object_ids[object_ids != 0])
    if diaObjectCat is not None and len(diaObjectCat):
        objs = _with_index_columns(diaObjectCat)
        objs = objs[np.isin(_ids(objs["diaObjectId"]), wanted)]
        if "validityStartMjdTai" in objs.columns:
            objs = objs.sort_values("validityStartMjdTai", kind="stable")
        objs = objs.drop_duplicates("diaObjectId", keep="last")
        obj_defaults = defaults("diaObject")
        obj_defaults.setdefault("validityStartMjdTai", float(src["midpointMjdTai"].max()))
        rows = encode_frame(objs, recs["diaObject"], obj_defaults)
        ids = _ids(objs["diaObjectId"]).tolist()
        inputs.objects = {oid: rows.row(i) for i, oid in enumerate(ids)}
        inputs.unused["diaObject"] = unused_columns(objs, recs["diaObject"])
    missing = np.setdiff1d(wanted, np.fromiter(inputs.objects, np.int64, len(inputs.objects)))
    if len(missing):
        log.warning(
            "%d DiaSource(s) point to DiaObjects absent from diaObjectCat (e.g. %d): "
            "their alerts carry no diaObject",
            int(np.isin(object_ids, missing).sum()),
            int(missing[0]),
        )
    hist = _history(diaSrcHistory, wanted, visit, source_ids, "diaSourceId")
    if hist is not None and len(hist):
        rows = encode_frame(hist, recs["diaSource"], defaults("diaSource"))
        inputs.src_history = group_spans(rows, hist["diaObjectId"].to_numpy(np.int64))
    forced = _history(diaForcedSources, wanted, visit, None, "diaForcedSourceId")
    if forced is not None and len(forced):
        rows = encode_frame(forced, recs["diaForcedSource"], defaults("diaForcedSource"))
        inputs.forced_history = group_spans(rows, forced["diaObjectId"].to_numpy(np.int64))
        inputs.unused["diaForcedSource"] = unused_columns(forced, recs["diaForcedSource"])
    if ssSrc is not None and len(ssSrc):
        ss = _with_index_columns(ssSrc)
        ss = ss[np.isin(_ids(ss["diaSourceId"]), source_ids)]
        if len(ss):
            ss = _ss_frame(ss, src)
            rows = encode_frame(ss, recs["ssSource"], defaults("ssSource"))
            ids = _ids(ss["diaSourceId"]).tolist()
            inputs.ss_sources = {sid: rows.row(i) for i, sid in enumerate(ids)}
            inputs.unused["ssSource"] = unused_columns(ss, recs["ssSource"])
    return inputs
