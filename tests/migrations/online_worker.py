"""Worker process of the online-migration test: store visits until told to stop.

`run` is what the test forks (imports done once, in the parent); the same
as a script: ``python online_worker.py URL WORKER N GO_FILE STOP_FILE OLD_COLUMNS``.

The worker plays the pipeline code of the revision *before* the one being
migrated: while an operator upgrades to revision R, the running code is
R-1's (new code is rolled out after the upgrade), and a downgrade from R
happens after the code was rolled back.  OLD_COLUMNS (JSON) maps a table to
the columns this package writes that revision R-1 lacks; the emulated old
code does not write them (nor look up ``partitionId``), and it opens the
database without the head-revision check (R-1's code would pass it).

It stores visit 1 (the first store pays one-off start-up costs), prints
``ready``, waits for GO_FILE, then stores one visit/detector after another
(detector = WORKER, visits 2, 3, ...) until STOP_FILE exists.  Every
worker's objects lie in the same small patch of sky and its visits run in
step with the other workers', so the stores overlap in time and in space;
the ``n`` DiaObjects of a worker get a new version at each visit.  At the
end it prints one JSON line: the visits stored, each failure, and the
start and end time of every store.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import sqlalchemy as sa
from astropy.time import Time

from apdb.config import ApdbConfig
from apdb.schema import CHUNK_TABLE
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)


def object_ids(worker: int, n: int) -> np.ndarray:
    """DiaObject ids of a worker (the same at every visit)."""
    return (np.int64(worker) << 32) + np.arange(1, n + 1, dtype=np.int64)


def source_ids(visit: int, worker: int, n: int) -> np.ndarray:
    """DiaSource (and DiaForcedSource) ids of one visit/detector: unique everywhere."""
    return (np.int64(visit * 64 + worker) << 20) + np.arange(n, dtype=np.int64)


def visit_mjd(visit: int) -> float:
    """Midpoint of a visit (one every 40 s)."""
    return 60000.0 + visit * 40.0 / 86400.0


def frames(worker: int, visit: int, n: int):
    """Catalogs of visit ``visit`` on detector ``worker``."""
    rng = np.random.default_rng(worker)
    ra, dec = random_positions(n, 30.0, -10.0, 0.2, rng)
    rng = np.random.default_rng([worker, visit])
    ids = object_ids(worker, n)
    src = source_ids(visit, worker, n)
    mjd = visit_mjd(visit)
    return (
        Time(mjd, format="mjd", scale="tai"),
        make_dia_objects(ids, ra, dec, rng, n_sources=visit),
        make_dia_sources(src, ids, ra, dec, visit, worker, mjd, rng),
        make_dia_forced_sources(src, ids, ra, dec, visit, worker, mjd, rng),
    )


def open_as_old_code(url: str, missing: dict[str, list[str]]):
    """Open the APDB as the code of the previous revision would (see module doc)."""
    import apdb.sql.apdb_sql as apdb_sql
    import apdb.sql.writes as writes

    original = writes.insert_batch

    def insert_known(conn, table, batch):
        for name in missing.get(table.name, []):
            batch.values.pop(name, None)
            batch.nulls.pop(name, None)
        original(conn, table, batch)

    writes.insert_batch = apdb_sql.insert_batch = insert_known
    if "partitionId" in missing.get("DiaObject", []):
        apdb_sql.citus.assign_partitions = lambda *args, **kwargs: None
    db = apdb_sql.ApdbSql(ApdbConfig(db_url=url), _check=False)
    if not sa.inspect(db.engine).has_table(CHUNK_TABLE):  # code before revision 0008
        db._history_writer.record_store = lambda *args: None
        db._history_writer.record_update = lambda *args: None
    return db


def run(url: str, worker: int, n: int, go: str, stop: str, missing: dict, say) -> None:
    """Store visits until ``stop`` exists; ``say`` gets ``ready`` and the JSON summary."""
    db = open_as_old_code(url, missing)
    stored, failures, timings = [], [], []
    visit = 0
    while not os.path.exists(stop):
        visit += 1
        if visit == 2:
            say("ready")
            while not os.path.exists(go):
                time.sleep(0.005)
        t, objects, sources, forced = frames(worker, visit, n)
        start = time.time()
        try:
            db.store(t, objects, sources, forced)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
            failures.append([visit, f"{type(exc).__name__}: {exc}"[:500]])
        else:
            stored.append(visit)
        end = time.time()
        timings.append([start, end])
    db.close()
    say(json.dumps({"stored": stored, "failures": failures, "timings": timings}))


def main() -> int:
    url, worker, n, go, stop, old = sys.argv[1:7]
    run(url, int(worker), int(n), go, stop, json.loads(old), lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
