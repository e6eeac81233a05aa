"""Daytime operations running while detectors store the same DiaObjects (both backends).

One process stores visits of 30 shared objects while another reassigns and
withdraws the first visit's sources of the same objects, both started
together.  Neither may see a deadlock or serialization failure, and the end
state must hold every operation's effect: each reassignment's final target,
every withdrawal, every stored source once, one open version per object.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.sky import Cone
from apdb.testing.catalogs import make_dia_objects, make_dia_sources, random_positions

N = 30
IDS = np.arange(1, N + 1, dtype=np.int64)
VISITS = range(2, 6)
ROUNDS = 4
T0 = 60000.0


def _frames(visit: int):
    rng = np.random.default_rng(visit)
    ra, dec = random_positions(N, 20.0, -3.0, 0.05, np.random.default_rng(0))
    mjd = T0 + visit / 1440.0
    return (
        Time(mjd, format="mjd", scale="tai"),
        make_dia_objects(IDS, ra, dec, rng, n_sources=visit),
        make_dia_sources(IDS + 1000 * visit, IDS, ra, dec, visit, 1, mjd, rng),
    )


def _moves(round_: int) -> dict[int, int]:
    """Round r moves the visit-1 source of each even object to its neighbour, or back."""
    return {
        int(1000 + i): int(i % N + 1) if round_ % 2 == 0 else int(i)
        for i in IDS[IDS % 2 == 0].tolist()
    }


def _withdrawn(round_: int) -> list[int]:
    return [1000 + 2 * round_ + 1]


def _store(url: str, barrier, results) -> None:
    try:
        with Apdb.from_url(url) as db:
            barrier.wait(120)
            for visit in VISITS:
                db.store(*_frames(visit))
        results.put(("store", "ok"))
    except Exception as exc:  # reported to the test, which fails on it
        results.put(("store", f"{type(exc).__name__}: {exc}"))


def _daytime(url: str, barrier, results) -> None:
    try:
        with Apdb.from_url(url) as db:
            barrier.wait(120)
            for round_ in range(ROUNDS):
                db.reassign_dia_sources_to_dia_objects(_moves(round_))
                db.withdraw_dia_sources(_withdrawn(round_))
        results.put(("daytime", "ok"))
    except Exception as exc:
        results.put(("daytime", f"{type(exc).__name__}: {exc}"))


@pytest.mark.timeout(300)
def test_reassign_and_withdraw_while_storing_the_same_objects(apdb_url):
    with Apdb.from_url(apdb_url) as db:
        db.store(*_frames(1))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(2)  # both start once both have opened the database
    procs = [ctx.Process(target=f, args=(apdb_url, barrier, results)) for f in (_store, _daytime)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    outcome = dict(results.get(timeout=5) for _ in procs)
    assert outcome == {"store": "ok", "daytime": "ok"}, outcome

    last = _moves(ROUNDS - 1)
    withdrawn = {s for r in range(ROUNDS) for s in _withdrawn(r)}
    read_at = Time(T0 + 1.0, format="mjd", scale="tai")
    with Apdb.from_url(apdb_url) as db:
        sources = db.get_dia_sources(read_at, Cone(20.0, -3.0, 0.2), include_withdrawn=True)
        objects = db.get_dia_objects(Cone(20.0, -3.0, 0.2))
        counts = db.row_counts()
    by_id = sources.set_index("diaSourceId")
    # Every source once; the first visit's carry their last reassignment.
    assert counts["DiaSource"] == N * (1 + len(VISITS)) == len(sources)
    assert by_id.index.is_unique
    for src, obj in last.items():
        assert by_id.loc[src, "diaObjectId"] == obj
    untouched = [s for s in IDS + 1000 if s not in last]
    assert (by_id.loc[untouched, "diaObjectId"].to_numpy() == IDS[IDS % 2 == 1]).all()
    assert set(by_id.index[by_id["timeWithdrawnMjdTai"].notna()]) == withdrawn
    # One open version per object, from the last visit (5 versions each).
    assert sorted(objects["diaObjectId"]) == IDS.tolist()
    assert (objects["validityStartMjdTai"] == _frames(VISITS[-1])[0].tai.mjd).all()
    assert counts["DiaObject"] == N * (1 + len(VISITS))
