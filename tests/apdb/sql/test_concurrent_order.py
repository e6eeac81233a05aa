"""Concurrent stores of overlapping visits that share DiaObjects, in any order.

Each worker process stores its plan of visit/detectors after a barrier, so
the stores really overlap.  Whatever the interleaving, every object must end
with exactly the version chain of the visits that stored it (in time order,
each version holding its own visit's ``nDiaSources`` marker), every row must
be there once, and every visit/detector recorded once.
"""

from __future__ import annotations

import numpy as np
import pytest

from apdb import Apdb
from tests.apdb.sql.visit_plans import (
    actual_chains,
    assert_chains_equal,
    expected_chains,
    integrity,
    run_plans,
)

# 40 objects per store: under PostgreSQL's default lock budget (64 - 16), so
# these stores take one advisory lock per object; the stress test's stores
# (100 objects) take the exclusive gate instead (apdb.sql.transaction).
SHARED = list(range(1, 31))


def _check(url: str, plans: dict[str, list], outcomes: dict[str, list[str]]) -> None:
    everything = [step for plan in plans.values() for step in plan]
    stored = {(v, d) for v, d, _ in everything}
    with Apdb.from_url(url) as db:
        assert_chains_equal(actual_chains(db), expected_chains(everything))
        counts = db.row_counts()
        assert all(db.contains_visit_detector(v, d) for v, d in stored)
        assert all(value == 0 for value in integrity(db).values()), integrity(db)
    n_rows = sum(len(ids) for _, _, ids in everything)
    assert counts["DiaSource"] == n_rows
    assert counts["DiaForcedSource"] == n_rows
    assert counts["ApdbVisitDetector"] == len(stored)


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_two_processes_store_overlapping_visits_of_shared_objects(apdb_url, order):
    # A stores visits 1, 3, 5 and B 2, 4, 6 (descending: every store but the
    # first of each is late), both on the same 30 objects plus 10 of their own.
    plans = {}
    for name, visits, own in (("A", [1, 3, 5], 1000), ("B", [2, 4, 6], 2000)):
        if order == "descending":
            visits = visits[::-1]
        plans[name] = [
            (v, 10 + v % 2, SHARED + list(range(own + 10 * v, own + 10 * v + 10))) for v in visits
        ]
    outcomes = run_plans(apdb_url, plans)
    assert outcomes == {"A": ["stored"] * 3, "B": ["stored"] * 3}, outcomes
    _check(apdb_url, plans, outcomes)


def test_eight_processes_stress_a_shared_edge(apdb_url):
    # Eight detectors x five visits in a shuffled order (late stores), all on
    # 40 shared edge objects, each also sharing 20 objects with each
    # neighbour detector and owning 20; then each re-stores its first
    # visit/detector, which must be refused without changing anything.
    rng = np.random.default_rng(12)
    edge = list(range(1, 41))
    plans = {}
    for det in range(8):
        left = list(range(1000 + 20 * det, 1020 + 20 * det))
        right = list(range(1000 + 20 * ((det + 1) % 8), 1020 + 20 * ((det + 1) % 8)))
        visits = rng.permutation(np.arange(1, 6)).tolist()
        plan = [
            (
                v,
                det,
                edge
                + left
                + right
                + list(range(100_000 * (det + 1) + 100 * v, 100_000 * (det + 1) + 100 * v + 40)),
            )
            for v in visits
        ]
        plans[f"det{det}"] = plan
    repeats = {name: plan[0] for name, plan in plans.items()}
    runs = {name: plan + [repeats[name]] for name, plan in plans.items()}
    outcomes = run_plans(apdb_url, runs)
    for name, out in outcomes.items():
        assert out == ["stored"] * 5 + ["refused"], (name, out)
    _check(apdb_url, plans, outcomes)
