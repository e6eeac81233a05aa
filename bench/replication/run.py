"""Replication rate against the store rate, and LSDB reads against SQL, in one run.

On one throwaway PostgreSQL server: an APDB with replication enabled is
filled through `Apdb.store` (``--visits`` visits of ``--objects`` DiaObjects,
each storing a new version of every object, a DiaSource and a
DiaForcedSource); the store rate is rows/s of those calls.  Then
`apdb.sql.ppdb.replicate` copies every chunk into a PPDB on the same server;
its rate is the stored rows over the replicator's time.  Ratio = replication
/ store (issue 13 target: >= 3).  Each of ``--rounds`` rounds fills two
such APDB/PPDB pairs (its store rate is that of both fills): one is
replicated with ``--chunks-per-transaction`` (default: the replicator's),
the other one chunk per PPDB transaction (every DiaObject version that a
later chunk closes is then written twice).  Each round's ratios compare
measurements a few seconds apart; the median over the rounds is reported,
with the load average (the machine may be shared).

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
import os
import statistics
import tempfile
import time

import numpy as np
from astropy.time import Time

from apdb import Apdb
from apdb.config import ApdbConfig, ReplicationConfig
from apdb.hats_export import export_hats
from apdb.replica import CHUNKS_PER_TRANSACTION
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


def _round(pg, r: int, frames, rows: int, batched: int, ratios: list[list[float]]) -> list:
    """One round: two APDB/PPDB pairs filled alike, replicated batched and chunk by chunk.

    The store rate is that of both fills of the round; each replication is
    compared with it (same round, a minute apart at most).
    """
    pairs, store_s = [], 0.0
    for k in range(2):
        config = ApdbConfig(
            db_url=pg.create_database(f"apdb_repl{r}_{k}"),
            replication=ReplicationConfig(enabled=True, chunk_seconds=1),
        )
        apdb = Apdb.create(config)
        ppdb = create_ppdb(pg.create_database(f"ppdb_repl{r}_{k}"))
        t0 = time.perf_counter()
        for t, o, s, f in frames:
            apdb.store(t, o, s, f)
        store_s += time.perf_counter() - t0
        pairs.append((apdb, ppdb))
    time.sleep(1.1)  # the last 1 s chunk ends
    store_rate = 2 * rows / store_s
    print(f"round {r + 1}: stored {rows:,} rows twice in {store_s:.2f} s: {store_rate:,.0f} rows/s")
    for k, ((apdb, ppdb), per_txn) in enumerate(zip(pairs, (batched, 1), strict=True)):
        stats = replicate(apdb, ppdb, grace=0, chunks_per_transaction=per_txn)
        assert stats.rows >= rows and apdb.get_replica_chunks() == [], stats
        # Rate of the stored rows (a DiaObject version re-sent when a
        # later chunk closes it is not counted twice).
        repl_rate = rows / stats.seconds
        ratios[k].append(repl_rate / store_rate)
        print(
            f"  replicated {stats.chunks} chunks, {chunks_per_txn_label(per_txn)}: "
            f"{stats.rows:,} rows written in {stats.seconds:.2f} s: {repl_rate:,.0f} stored "
            f"rows/s = {repl_rate / store_rate:.2f}x the store rate (target >= 3x)"
        )
    return pairs


def _warm_up(pg, frame) -> None:
    """Store one visit and replicate it, untimed: one-time costs stay out of round 1."""
    apdb = Apdb.create(
        ApdbConfig(
            db_url=pg.create_database("apdb_warm"),
            replication=ReplicationConfig(enabled=True, chunk_seconds=1),
        )
    )
    ppdb = create_ppdb(pg.create_database("ppdb_warm"))
    apdb.store(*frame)
    time.sleep(1.1)
    replicate(apdb, ppdb, grace=0)
    apdb.close()
    ppdb.close()
    pg.drop_database("apdb_warm")
    pg.drop_database("ppdb_warm")


def _drop(pg, r: int, pairs: list) -> None:
    for k, (apdb, ppdb) in enumerate(pairs):
        apdb.close()
        ppdb.close()
        pg.drop_database(f"apdb_repl{r}_{k}")
        pg.drop_database(f"ppdb_repl{r}_{k}")


def chunks_per_txn_label(n: int) -> str:
    """``N chunks per PPDB transaction``."""
    return f"{n} chunk{'s' if n > 1 else ''} per PPDB transaction"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.replication")
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--read-objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=3, help="fill + replicate rounds (median ratio reported)"
    )
    parser.add_argument(
        "--chunks-per-transaction", type=int, default=CHUNKS_PER_TRANSACTION, metavar="N"
    )
    args = parser.parse_args(argv)
    plan = SurveyPlan(args.objects, radius=RADIUS, seed=11)
    # A cone holding about --read-objects of the uniformly spread objects.
    read_radius = RADIUS * np.sqrt(min(1.0, args.read_objects / args.objects))
    cone = Cone(plan.ra.mean(), plan.dec.mean(), float(read_radius))
    print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    with TemporaryPostgres() as pg:
        frames = [visit_frames(plan, v) for v in range(1, args.visits + 1)]
        rows = sum(len(o) + len(s) + len(f) for _, o, s, f in frames)
        _warm_up(pg, frames[0])
        ratios: list[list[float]] = [[], []]  # batched, one chunk per transaction
        for r in range(args.rounds):
            pairs = _round(pg, r, frames, rows, args.chunks_per_transaction, ratios)
            if r < args.rounds - 1:
                _drop(pg, r, pairs)
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        for per_txn, values in zip((args.chunks_per_transaction, 1), ratios, strict=True):
            print(
                f"median over {args.rounds} rounds, {chunks_per_txn_label(per_txn)}: "
                f"{statistics.median(values):.2f}x the store rate (rounds: "
                + ", ".join(f"{v:.2f}" for v in values)
                + ")"
            )
        pairs[1][0].close()
        pairs[1][1].close()
        apdb, ppdb = pairs[0]
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
