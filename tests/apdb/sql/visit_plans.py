"""Synthetic visits with shared DiaObjects, and a worker process that stores a plan.

Every store of visit ``v`` gives each of its DiaObjects ``nDiaSources = v``
(a marker: the version of visit ``v`` must hold ``v``) and one DiaSource and
one DiaForcedSource per object.  Visit ``v`` is at MJD ``60000 + v / 100``.
"""

from __future__ import annotations

import multiprocessing
import traceback

import numpy as np
import pandas as pd
from astropy.time import Time

from apdb import Apdb
from apdb.errors import AlreadyStoredError, ApdbError
from apdb.sql.integrity import check_integrity, dia_object_versions
from apdb.testing.catalogs import make_dia_forced_sources, make_dia_objects, make_dia_sources


def visit_mjd(visit: int) -> float:
    """Visit time (MJD TAI)."""
    return 60000.0 + visit / 100.0


def visit_frames(
    visit: int, detector: int, object_ids: np.ndarray
) -> tuple[Time, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Frames of one visit/detector storing ``object_ids``."""
    ids = np.asarray(object_ids, dtype=np.int64)
    rng = np.random.default_rng(visit * 1000 + detector)
    ra = 10.0 + (ids % 1000) * 1e-4
    dec = -5.0 + (ids // 1000 % 1000) * 1e-4
    mjd = visit_mjd(visit)
    source_ids = ((visit * 100 + detector) << 24) + np.arange(len(ids), dtype=np.int64)
    objects = make_dia_objects(ids, ra, dec, rng, n_sources=visit)
    sources = make_dia_sources(source_ids, ids, ra, dec, visit, detector, mjd, rng)
    forced = make_dia_forced_sources(source_ids, ids, ra, dec, visit, detector, mjd, rng)
    return Time(mjd, format="mjd", scale="tai"), objects, sources, forced


def store_plan(
    url: str,
    plan: list[tuple[int, int, list[int]]],
    barrier: multiprocessing.synchronize.Barrier | None,
    results: multiprocessing.Queue,
    name: str,
) -> None:
    """Worker: store each ``(visit, detector, object_ids)`` of ``plan`` in order.

    Puts ``(name, outcomes)`` on ``results``; an outcome is ``"stored"``,
    ``"refused"`` (`AlreadyStoredError`) or ``"error: ..."``.
    """
    outcomes: list[str] = []
    try:
        frames = [visit_frames(v, d, np.array(ids)) for v, d, ids in plan]
        db = Apdb.from_url(url)
        if barrier is not None:
            barrier.wait(timeout=60)
        for f in frames:
            try:
                db.store(*f)
                outcomes.append("stored")
            except AlreadyStoredError:
                outcomes.append("refused")
            except ApdbError as exc:
                outcomes.append(f"error: {type(exc).__name__}: {exc}")
        db.close()
    except BaseException:
        outcomes.append("crash: " + traceback.format_exc())
    results.put((name, outcomes))


def _warm_up() -> None:
    """Import what a first store imports lazily (healpy, IERS), once, before forking."""
    from apdb.sky import pixel_index

    pixel_index(np.array([10.0]), np.array([0.0]), 8)
    Time.now().tai.mjd  # noqa: B018 - loads astropy's time scale tables


def run_plans(url: str, plans: dict[str, list[tuple[int, int, list[int]]]]) -> dict[str, list]:
    """Run one process per plan, all released together by a barrier."""
    _warm_up()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(plans))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=store_plan, args=(url, plan, barrier, results, name))
        for name, plan in plans.items()
    ]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, (p.name, p.exitcode)
    return out


def expected_chains(
    plans: list[tuple[int, int, list[int]]],
) -> dict[int, list[tuple[float, float, int]]]:
    """The version chain each object must end with: its visits in time order."""
    visits: dict[int, set[int]] = {}
    for v, _d, ids in plans:
        for i in ids:
            visits.setdefault(int(i), set()).add(v)
    out = {}
    for i, vs in visits.items():
        ordered = sorted(vs)
        ends = [visit_mjd(v) for v in ordered[1:]] + [np.nan]
        out[i] = [(visit_mjd(v), e, v) for v, e in zip(ordered, ends, strict=True)]
    return out


def actual_chains(db: Apdb) -> dict[int, list[tuple[float, float, int]]]:
    """The stored version chain of every object."""
    with db.engine.connect() as conn:
        frame = dia_object_versions(conn)
    out: dict[int, list[tuple[float, float, int]]] = {}
    for row in frame.itertuples(index=False):
        out.setdefault(int(row.diaObjectId), []).append(
            (row.validityStartMjdTai, row.validityEndMjdTai, int(row.nDiaSources))
        )
    return out


def assert_chains_equal(actual: dict, expected: dict) -> None:
    """Same objects, same versions; NaN ends compare equal."""
    assert sorted(actual) == sorted(expected)
    for i, chain in expected.items():
        got = actual[i]
        assert len(got) == len(chain), (i, got, chain)
        for (s1, e1, n1), (s2, e2, n2) in zip(got, chain, strict=True):
            assert s1 == s2 and n1 == n2, (i, got, chain)
            assert (np.isnan(e1) and np.isnan(e2)) or e1 == e2, (i, got, chain)


def integrity(db: Apdb) -> dict[str, int]:
    """`check_integrity` on ``db``."""
    with db.engine.connect() as conn:
        return check_integrity(conn)


def count_rows(db: Apdb, table: str) -> int:
    """Rows of ``table``."""
    return int(db.row_counts()[table])


__all__ = [
    "actual_chains",
    "assert_chains_equal",
    "count_rows",
    "expected_chains",
    "integrity",
    "run_plans",
    "visit_frames",
    "visit_mjd",
]
