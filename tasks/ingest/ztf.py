"""ZTF alert archives (Avro or Parquet packets) into DiaSources.

A ZTF alert packet carries the triggering detection (``candidate``) and up
to 30 days of earlier measurements at the position (``prv_candidates``:
detections with a ``candid``, and non-detections, i.e. upper limits,
without one).  `read_ztf_alerts` reads packets from Avro files (one or many
per file, e.g. ZTF's nightly tarballs unpacked) or from a Parquet table
with one packet per row (as alert brokers store them), and returns one row
per (objectId, detection): the same detection appears in every alert of the
object that lists it.  `ztf_dia_sources` keeps each detection once and maps
it to DiaSource columns with `ZTF_MAPPING`.  A detection is identified by
its exposure and quadrant (``jd``, ``fid``, ``rcid``) and its position
(within `SAME_DETECTION_ARCSEC`), not by ``candid``: archives that stored
``prv_candidates`` through float64 and float32 (as broker Parquet files do)
hold ``candid`` rounded to a multiple of 512, so distinct detections share
one, and magnitudes rounded in the 5th decimal, so the copy of a detection
in a later packet's history differs slightly from the packet that carried
it; the packet's own ``candidate`` (full precision) is kept when present.
Mapping:

- ``magpsf``, ``sigmapsf`` (AB difference magnitude) and ``isdiffpos``
  (``t``/``1``: science brighter than the reference) → signed ``psfFlux``
  and ``psfFluxErr`` in nJy;
- ``fid`` (1, 2, 3) → band ``g``, ``r``, ``i``;
- ``jd`` (UTC, start of the 30 s exposure) → ``midpointMjdTai``;
- ``rcid`` (readout channel, 0-63) → ``detector``; the visit is the
  exposure's midpoint in seconds (`ColumnMapping` makes visits from the
  time) and ``diaSourceId`` is made from visit, detector and row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.ingest.catalog import to_dia_sources
from tasks.ingest.errors import IngestError
from tasks.ingest.mapping import ColumnMapping

__all__ = [
    "ZTF_MAPPING",
    "ZTF_FIELDS",
    "SAME_DETECTION_ARCSEC",
    "read_ztf_alerts",
    "ztf_dia_sources",
]

ZTF_FIELDS = (
    "candid",
    "jd",
    "fid",
    "rcid",
    "field",
    "ra",
    "dec",
    "magpsf",
    "sigmapsf",
    "isdiffpos",
)
"""Fields of a ZTF candidate read from each packet."""

ZTF_MAPPING = ColumnMapping(
    columns={
        "ra": "ra",
        "dec": "dec",
        "flux": "magpsf",
        "fluxErr": "sigmapsf",
        "sign": "isdiffpos",
        "time": "jd",
        "band": "fid",
        "detector": "rcid",
    },
    flux_unit="mag",
    time_format="jd",
    time_scale="utc",
    time_reference="start",
    exposure_time=30.0,
    bands={"1": "g", "2": "r", "3": "i"},
)
"""How ZTF candidate fields become DiaSource columns."""

SAME_DETECTION_ARCSEC = 0.1
"""Copies of a detection in one exposure/quadrant lie closer than this (arcsec)."""


def _packets_from_avro(path: Path) -> Iterator[dict[str, Any]]:
    import fastavro

    try:
        with path.open("rb") as handle:
            yield from fastavro.reader(handle)
    except (OSError, ValueError, EOFError) as exc:
        raise IngestError(f"cannot read ZTF alerts from {path}: {exc}") from None


def _packets_from_parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        table = pd.read_parquet(path, columns=["objectId", "candidate", "prv_candidates"])
    except (OSError, ValueError, KeyError) as exc:
        raise IngestError(f"cannot read ZTF alerts from {path}: {exc}") from None
    for row in table.itertuples(index=False):
        yield {
            "objectId": row.objectId,
            "candidate": row.candidate,
            "prv_candidates": row.prv_candidates,
        }


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".avro", ".parquet"))
        elif p.exists():
            out.append(p)
        else:
            raise IngestError(f"no such alert file or directory: {p}")
    if not out:
        raise IngestError("no .avro or .parquet alert files found")
    return out


def read_ztf_alerts(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Read ZTF alert packets; return one row per (objectId, detection).

    Parameters
    ----------
    paths : path or iterable of paths
        ``.avro`` files, ``.parquet`` tables of packets, or directories of them.

    Returns
    -------
    detections : `pandas.DataFrame`
        `ZTF_FIELDS` plus ``objectId`` and ``inAlert`` (True for the
        packet's own ``candidate``, False for a ``prv_candidates`` entry);
        ``candid`` as int64.  Non-detections are left out.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    n_packets = 0
    for path in _files(paths):
        packets = (
            _packets_from_avro(path) if path.suffix == ".avro" else _packets_from_parquet(path)
        )
        for packet in packets:
            n_packets += 1
            try:
                object_id = packet["objectId"]
                candidate = packet["candidate"]
            except (KeyError, TypeError):
                raise IngestError(
                    f"{path}: not a ZTF alert packet (no objectId/candidate)"
                ) from None
            history = packet.get("prv_candidates")
            history = [] if history is None else list(history)
            for entry, own in [(candidate, True)] + [(h, False) for h in history]:
                if entry is None or entry.get("candid") is None or entry.get("magpsf") is None:
                    continue  # a non-detection (upper limit)
                row = {name: entry.get(name) for name in ZTF_FIELDS}
                row["objectId"] = object_id
                row["inAlert"] = own
                rows.append(row)
    if not rows:
        raise IngestError(f"{n_packets} ZTF packets hold no detection")
    # candids exceed 2**53: build that column from the Python ints, never through float64
    candid = np.array([row.pop("candid") for row in rows], dtype=np.int64)
    frame = pd.DataFrame(rows)
    frame.insert(0, "candid", candid)
    frame["detection"] = _detection_codes(frame)
    frame = frame.drop_duplicates(["objectId", "detection"]).reset_index(drop=True)
    return frame


def _detection_codes(frame: pd.DataFrame) -> np.ndarray:
    """Return detection numbers: same exposure, band, quadrant and position."""
    from scipy.spatial import cKDTree

    codes = np.full(len(frame), -1, dtype=np.int64)
    # the packets' own candidates first, so they represent their detection
    order = np.argsort(~frame["inAlert"].to_numpy(bool), kind="stable")
    frame = frame.iloc[order]
    ra = np.radians(frame["ra"].to_numpy(float))
    dec = np.radians(frame["dec"].to_numpy(float))
    xyz = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    chord = 2.0 * np.sin(np.radians(SAME_DETECTION_ARCSEC / 3600.0) / 2.0)
    next_code = 0
    keys = frame[["jd", "fid", "rcid"]].itertuples(index=False, name=None)
    groups: dict[tuple, list[int]] = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    for members in groups.values():
        idx = np.asarray(members)
        pairs = cKDTree(xyz[idx]).query_ball_point(xyz[idx], chord)
        for local, neighbours in enumerate(pairs):
            k = idx[local]
            if codes[order[k]] >= 0:
                continue
            for other in neighbours:
                if codes[order[idx[other]]] < 0:
                    codes[order[idx[other]]] = next_code
            next_code += 1
    return codes


def ztf_dia_sources(detections: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each ZTF detection once, as DiaSource rows (see the module docstring).

    Parameters
    ----------
    detections : `pandas.DataFrame`
        From `read_ztf_alerts`.

    Returns
    -------
    sources : `pandas.DataFrame`
        DiaSource rows (`tasks.ingest.catalog.DIA_SOURCE_COLUMNS`) plus ZTF's ``candid``.
    membership : `pandas.DataFrame`
        ``objectId``, ``diaSourceId``: which ZTF objects' packets list each
        detection.
    """
    codes = detections["detection"].to_numpy(np.int64)
    # one row per detection, the packet's own candidate when there is one
    first = detections.sort_values("inAlert", ascending=False, kind="stable").drop_duplicates(
        "detection"
    )
    sources = to_dia_sources(
        first.drop(columns=["objectId", "inAlert"]), ZTF_MAPPING, keep=["detection", "candid"]
    )
    lookup = pd.Series(sources["diaSourceId"].to_numpy(), index=sources["detection"].to_numpy())
    membership = pd.DataFrame(
        {
            "objectId": detections["objectId"].to_numpy(),
            "diaSourceId": lookup.loc[codes].to_numpy(np.int64),
        }
    ).drop_duplicates()
    return sources.drop(columns=["detection"]), membership
