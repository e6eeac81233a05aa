"""Identifiers of catalog rows produced by the pipeline.

One rule for every table a visit writes, so ids never collide between
visits or detectors: ``id = (visit * MAX_DETECTORS + detector) * 2**SEQUENCE_BITS + n``
with ``n`` the 0-based row number within the visit/detector.  With visit
numbers below 2**33 (8.6e9: room for survey exposure numbers such as ZTF's
``EXPID`` ~3e8, and for visits numbered by their midpoint in seconds since
MJD 0, up to MJD ~99000), 1000 detectors and 2**20 rows per table per
detector, ids stay below 2**63.
"""

from __future__ import annotations

import numpy as np

from tasks.core.base import TaskError

__all__ = ["MAX_DETECTORS", "SEQUENCE_BITS", "make_ids", "split_ids"]

MAX_DETECTORS = 1000
SEQUENCE_BITS = 20
_MAX_VISIT = 2**33


def make_ids(visit: int, detector: int, n: int, start: int = 0) -> np.ndarray:
    """Return ``n`` unique int64 ids for rows of one visit/detector.

    Parameters
    ----------
    visit : `int`
        Visit number, ``0 <= visit < 2**33``.
    detector : `int`
        Detector number, ``0 <= detector < MAX_DETECTORS``.
    n : `int`
        Number of ids.
    start : `int`, optional
        First sequence number (to continue a sequence).

    Returns
    -------
    ids : `numpy.ndarray` of int64
    """
    if not 0 <= visit < _MAX_VISIT:
        raise TaskError(f"visit {visit} is outside [0, {_MAX_VISIT})")
    if not 0 <= detector < MAX_DETECTORS:
        raise TaskError(f"detector {detector} is outside [0, {MAX_DETECTORS})")
    if start < 0 or start + n > 2**SEQUENCE_BITS:
        raise TaskError(f"cannot make {n} ids from {start}: at most {2**SEQUENCE_BITS} per table")
    base = (int(visit) * MAX_DETECTORS + int(detector)) << SEQUENCE_BITS
    return base + np.arange(start, start + n, dtype=np.int64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert `make_ids`: return ``(visit, detector, sequence)`` arrays."""
    ids = np.asarray(ids, dtype=np.int64)
    seq = ids & ((1 << SEQUENCE_BITS) - 1)
    vd = ids >> SEQUENCE_BITS
    return vd // MAX_DETECTORS, vd % MAX_DETECTORS, seq
