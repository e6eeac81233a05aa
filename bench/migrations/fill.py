"""Fill an APDB through the public API: one store per visit/detector."""

from __future__ import annotations

import time

import numpy as np
from astropy.time import Time

from apdb import Apdb
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)


def fill(url: str, rows: int, per_store: int = 2_000, log=print) -> float:
    """Store ``rows`` DiaSources (one new DiaObject and one forced source each).

    Parameters
    ----------
    url : `str`
        APDB at head.
    rows : `int`
        DiaSources to store.
    per_store : `int`
        Rows per `Apdb.store` call (one visit/detector; detector-sized: a
        store locks each of its DiaObjects, and PostgreSQL's lock table
        holds ~6,400 locks by default).
    log : callable
        Progress printer.

    Returns
    -------
    seconds : `float`
        Time of the fill.
    """
    start = time.time()
    rng = np.random.default_rng(42)
    with Apdb.from_url(url) as db:
        done, visit = 0, 0
        while done < rows:
            n = min(per_store, rows - done)
            visit += 1
            ids = np.arange(done + 1, done + n + 1, dtype=np.int64)
            # Fields spread over the sky so the tables are not one hot spot.
            ra, dec = random_positions(n, (visit * 7.3) % 360.0, -30.0 + (visit % 60), 1.0, rng)
            mjd = 60000.0 + visit * 30.0 / 86400.0
            t = Time(mjd, format="mjd", scale="tai")
            db.store(
                t,
                make_dia_objects(ids, ra, dec, rng),
                make_dia_sources(ids, ids, ra, dec, visit, 1, mjd, rng),
                make_dia_forced_sources(ids, ids, ra, dec, visit, 1, mjd, rng),
            )
            done += n
            if visit % 100 == 0:
                log(f"  stored {done:,} / {rows:,} DiaSources ({time.time() - start:.0f} s)")
    return time.time() - start
