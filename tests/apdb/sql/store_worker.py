"""Child process for the concurrency and crash tests: store one visit/detector.

Usage: ``python store_worker.py URL VISIT DETECTOR N MODE [BARRIER_FILE]``

MODE ``store``: wait until BARRIER_FILE exists (so that several workers start
their stores together), print ``starting``, store, print ``stored`` (or
``refused: ...`` when the visit/detector is already there).
MODE ``hang``: pause inside the store transaction, after the DiaSources are
written and before the DiaObjects, announce it on stdout and sleep until killed.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from astropy.time import Time

from apdb import Apdb
from apdb.errors import AlreadyStoredError
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)


def frames(visit: int, detector: int, n: int):
    """Frames of one visit/detector: objects, sources, forced sources."""
    rng = np.random.default_rng(visit * 1000 + detector)
    base = (visit * 1000 + detector) << 20
    ids = base + np.arange(n, dtype=np.int64)
    ra, dec = random_positions(n, 10.0 + detector, -5.0, 0.1, rng)
    mjd = 60000.0 + visit / 1000.0
    return (
        Time(mjd, format="mjd", scale="tai"),
        make_dia_objects(ids, ra, dec, rng),
        make_dia_sources(ids, ids, ra, dec, visit, detector, mjd, rng),
        make_dia_forced_sources(ids, ids, ra, dec, visit, detector, mjd, rng),
    )


def main() -> int:
    url, visit, detector, n, mode = sys.argv[1:6]
    visit, detector, n = int(visit), int(detector), int(n)
    t, objects, sources, forced = frames(visit, detector, n)
    db = Apdb.from_url(url)
    if mode == "hang":
        import apdb.sql.apdb_sql as module

        original = module.update_objects

        def hang(*args, **kwargs):
            print("inside-transaction", flush=True)
            time.sleep(600)
            return original(*args, **kwargs)

        module.update_objects = hang
    else:
        barrier = sys.argv[6]
        while not os.path.exists(barrier):
            time.sleep(0.005)
    if mode != "hang":
        print("starting", flush=True)
    try:
        db.store(t, objects, sources, forced)
    except AlreadyStoredError as exc:
        print(f"refused: {exc}", flush=True)
        return 0
    print("stored", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
