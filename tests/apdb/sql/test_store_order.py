"""Stores in any order: late stores of older visits slot into each object's history."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from apdb import Apdb
from apdb.errors import AlreadyStoredError
from tests.apdb.sql.visit_plans import (
    actual_chains,
    assert_chains_equal,
    expected_chains,
    integrity,
    visit_frames,
    visit_mjd,
)

SHARED = np.arange(1, 51, dtype=np.int64)


def _store(db: Apdb, visit: int, detector: int, ids: np.ndarray) -> None:
    db.store(*visit_frames(visit, detector, ids))


def _latest(db: Apdb) -> dict[int, tuple[float, int]]:
    """``{diaObjectId: (validityStartMjdTai, nDiaSources)}`` of the open versions."""
    return {i: chain[-1][::2] for i, chain in actual_chains(db).items() if np.isnan(chain[-1][1])}


def test_newer_after_older_closes_the_previous_version(apdb: Apdb):
    for v in (1, 2, 3):
        _store(apdb, v, 1, SHARED)
    t1, t2, t3 = visit_mjd(1), visit_mjd(2), visit_mjd(3)
    for chain in actual_chains(apdb).values():
        assert chain[0] == (t1, t2, 1)
        assert chain[1] == (t2, t3, 2)
        assert chain[2][0] == t3 and np.isnan(chain[2][1]) and chain[2][2] == 3
    assert set(_latest(apdb).values()) == {(t3, 3)}
    assert all(v == 0 for v in integrity(apdb).values())


def test_older_after_newer_is_inserted_into_the_history(apdb: Apdb):
    # Visit 3 first, then the late visits 1 and 2 (Rubin: a slow detector).
    _store(apdb, 3, 1, SHARED)
    _store(apdb, 1, 1, SHARED)
    chains = actual_chains(apdb)
    for chain in chains.values():
        assert chain[0] == (visit_mjd(1), visit_mjd(3), 1)
        assert chain[1][0] == visit_mjd(3) and np.isnan(chain[1][1]) and chain[1][2] == 3
    _store(apdb, 2, 1, SHARED)
    plan = [(v, 1, SHARED.tolist()) for v in (1, 2, 3)]
    assert_chains_equal(actual_chains(apdb), expected_chains(plan))
    # The newer version is the latest and is unchanged: nDiaSources of visit 3.
    assert set(_latest(apdb).values()) == {(visit_mjd(3), 3)}
    assert all(v == 0 for v in integrity(apdb).values())


def test_a_late_store_of_a_new_object_makes_it_the_latest(apdb: Apdb):
    _store(apdb, 3, 1, SHARED[:10])
    late = np.concatenate([SHARED[:10], np.array([1000, 1001])])
    _store(apdb, 1, 2, late)
    latest = _latest(apdb)
    assert latest[1000] == (visit_mjd(1), 1) and latest[1001] == (visit_mjd(1), 1)
    assert all(latest[int(i)] == (visit_mjd(3), 3) for i in SHARED[:10])
    assert all(v == 0 for v in integrity(apdb).values())


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3, 4]))[::5])
def test_every_order_gives_the_same_history(apdb: Apdb, order):
    # Objects 1-50 are in every visit, 51-60 only in the odd ones.
    odd = np.arange(51, 61, dtype=np.int64)
    plan = []
    for v in order:
        ids = np.concatenate([SHARED, odd]) if v % 2 else SHARED
        plan.append((v, 1, ids.tolist()))
        _store(apdb, v, 1, ids)
    assert_chains_equal(actual_chains(apdb), expected_chains(plan))
    counts = apdb.row_counts()
    assert counts["DiaSource"] == sum(len(ids) for _, _, ids in plan)
    assert counts["ApdbVisitDetector"] == 4
    assert all(v == 0 for v in integrity(apdb).values())


def test_a_second_detector_of_the_same_visit_replaces_that_version(apdb: Apdb):
    _store(apdb, 1, 1, SHARED)
    _store(apdb, 3, 1, SHARED)
    # Detector 2 of visit 1 stores the same objects late: visit 1's version
    # is replaced (its values stand), the chain still ends at visit 3.
    time, objects, sources, forced = visit_frames(1, 2, SHARED)
    objects["nDiaSources"] = 7
    apdb.store(time, objects, sources, forced)
    for chain in actual_chains(apdb).values():
        assert chain[0] == (visit_mjd(1), visit_mjd(3), 7)
        assert chain[1][0] == visit_mjd(3) and np.isnan(chain[1][1])
    assert apdb.row_counts()["DiaObject"] == 2 * len(SHARED)
    assert all(v == 0 for v in integrity(apdb).values())


def test_a_repeated_late_visit_detector_is_refused_and_changes_nothing(apdb: Apdb):
    _store(apdb, 2, 1, SHARED)
    _store(apdb, 1, 1, SHARED)
    before_counts, before_chains = apdb.row_counts(), actual_chains(apdb)
    with pytest.raises(AlreadyStoredError, match=r"visit/detector.*\(1, 1\)"):
        _store(apdb, 1, 1, SHARED)
    assert apdb.row_counts() == before_counts
    assert_chains_equal(actual_chains(apdb), before_chains)
