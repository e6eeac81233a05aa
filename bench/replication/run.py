"""Replication rate against the store rate, and LSDB reads against SQL, in one run.

On one throwaway PostgreSQL server: an APDB with replication enabled is
filled through `Apdb.store` (``--visits`` visits of ``--objects`` DiaObjects,
each storing a new version of every object, a DiaSource and a
DiaForcedSource); the store rate is rows/s of those calls.  Then
`apdb.sql.ppdb.replicate` copies every chunk into a PPDB on the same server;
its rate is rows/s of the replicator.  Ratio = replication / store (issue 13
target: >= 3).

Reads: the PPDB is exported as a HATS catalog (`apdb.hats_export`); a cone
holding about ``--read-objects`` DiaObjects is read with their light curves
(every DiaSource and DiaForcedSource) through LSDB (cone search + nested
columns, flattened), through SQL on the APDB and on the PPDB
(`get_dia_objects` + `get_dia_sources` + `get_dia_forced_sources` of those
objects, no time window); median of ``--repeat`` runs each, checked to
return the same objects and measurements.

Run from the repository root: ``python -m bench.replication``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from astropy.time import Time

from apdb import Apdb
from apdb.config import ApdbConfig, ReplicationConfig
from apdb.hats_export import export_hats
from apdb.sky import Cone
from apdb.sql.ppdb import create_ppdb, replicate
from apdb.testing import TemporaryPostgres
from apdb.testing.survey import SurveyPlan, visit_frames

RADIUS = 2.0  # degrees: the survey's objects are spread in this cone


def _sql_read(db, cone: Cone, t: Time) -> tuple[int, int]:
    objects = db.get_dia_objects(cone)
    ids = objects["diaObjectId"].to_numpy()
    src = db.get_dia_sources(t, object_ids=ids, months=1200, include_withdrawn=True)
    frc = db.get_dia_forced_sources(t, object_ids=ids, months=1200, include_withdrawn=True)
    return len(objects), len(src) + len(frc)


def _lsdb_read(path: str, cone: Cone) -> tuple[int, int]:
    import lsdb

    cat = lsdb.open_catalog(path)
    got = cat.cone_search(cone.ra, cone.dec, cone.radius * 3600.0).compute()
    n = len(got["diaSource"].nest.to_flat()) + len(got["diaForcedSource"].nest.to_flat())
    return len(got), n


def _median(fn, repeat: int) -> tuple[float, tuple[int, int]]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.replication")
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--read-objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    plan = SurveyPlan(args.objects, radius=RADIUS, seed=11)
    # A cone holding about --read-objects of the uniformly spread objects.
    read_radius = RADIUS * np.sqrt(min(1.0, args.read_objects / args.objects))
    cone = Cone(plan.ra.mean(), plan.dec.mean(), float(read_radius))
    with TemporaryPostgres() as pg:
        apdb_url = pg.create_database("apdb_repl")
        ppdb_url = pg.create_database("ppdb_repl")
        config = ApdbConfig(
            db_url=apdb_url, replication=ReplicationConfig(enabled=True, chunk_seconds=1)
        )
        apdb = Apdb.create(config)
        ppdb = create_ppdb(ppdb_url)
        frames = [visit_frames(plan, v) for v in range(1, args.visits + 1)]
        rows = sum(len(o) + len(s) + len(f) for _, o, s, f in frames)
        t0 = time.perf_counter()
        for t, o, s, f in frames:
            apdb.store(t, o, s, f)
        store_s = time.perf_counter() - t0
        time.sleep(1.1)  # the last 1 s chunk ends
        stats = replicate(apdb, ppdb, grace=0)
        assert stats.rows >= rows, (stats.rows, rows)
        store_rate, repl_rate = rows / store_s, stats.rows / stats.seconds
        print(f"stored {rows:,} rows in {store_s:.2f} s: {store_rate:,.0f} rows/s")
        print(
            f"replicated {stats.chunks} chunks, {stats.rows:,} rows in {stats.seconds:.2f} s: "
            f"{repl_rate:,.0f} rows/s"
        )
        print(f"replication / store rate: {repl_rate / store_rate:.2f}x (target >= 3x)")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            export_hats(ppdb, f"{tmp}/hats", order=5)
            print(f"HATS export of the PPDB: {time.perf_counter() - t0:.2f} s")
            t_end = plan.visit_time(args.visits + 1)
            res = {
                "SQL on the APDB": _median(lambda: _sql_read(apdb, cone, t_end), args.repeat),
                "SQL on the PPDB": _median(lambda: _sql_read(ppdb, cone, t_end), args.repeat),
                "LSDB on the HATS export": _median(
                    lambda: _lsdb_read(f"{tmp}/hats", cone), args.repeat
                ),
            }
        apdb.close()
        ppdb.close()
    counts = {v[1] for v in res.values()}
    assert len(counts) == 1, res  # every path returns the same objects and measurements
    ref = res["SQL on the APDB"][0]
    n_obj, n_meas = counts.pop()
    print(f"cone of {cone.radius:.3f} deg: {n_obj} DiaObjects, {n_meas} measurements")
    for name, (sec, _) in res.items():
        print(f"  {name:<26s} {sec * 1000:8.1f} ms  ({sec / ref:.2f}x the APDB's SQL)")
    return 0
