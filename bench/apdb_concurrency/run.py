"""APDB concurrency benchmark: W detector processes against one PostgreSQL, ours and Rubin's.

For each W (``--workers``, default 1 8 16 32) and each implementation, W
worker processes (forked, released together by a barrier) take detector-visit
cycles from a shared list, visit by visit: all cells of a visit, then the
next visit, so neighbouring detectors of one visit and the same detector of
consecutive visits run at the same time and update shared edge objects, in
either order.  A cycle (see `bench.apdb_concurrency.workload`) is timed phase
by phase:

``objects``  DiaObjects in the cell's cone (0.2°) padded by 20";
``sources``  12-month DiaSource history of those objects;
``forced``   12-month DiaForcedSource history of those objects;
``store``    the cycle's DiaObjects, DiaSources and DiaForcedSources.

Both implementations start every W from the same history: ``history_visits``
(8) visits of every cell stored once, sequentially, in a base database per
implementation, cloned (``CREATE DATABASE ... TEMPLATE``) for each W.

Reported per W and implementation: detector-visits/s (completed cycles over
the wall time from the barrier to the last worker), p50/p95 of each phase and
of the cycle, client CPU (the workers' process time) and server CPU (every
PostgreSQL process, read from ``/proc``) per detector-visit, failed cycles by
error type, and an integrity check of the database afterwards: lost and
duplicated rows against the successful stores, DiaObjects without or with
several open versions, broken version chains (`apdb.sql.integrity`).

Run from the repository root::

    python -m bench.apdb_concurrency               # W = 1 8 16 32
    python -m bench.apdb_concurrency --quick       # small sky, W = 1 8
    python -m bench.apdb_concurrency --workers 16 --only ours

Output: a table on stdout and ``bench/results/apdb_concurrency.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.apdb_concurrency.backends import create_database, open_backend
from bench.apdb_concurrency.report import print_report, summarize
from bench.apdb_concurrency.workload import Cycle, FieldConfig, Sky

PHASES = ("objects", "sources", "forced", "store")
REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        prog="python -m bench.apdb_concurrency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--quick", action="store_true", help="4x4 cells, 2 measured visits, W = 1 8")
    p.add_argument("--measured-visits", type=int, default=None, help="visits timed per W (3)")
    p.add_argument(
        "--edge-arcsec",
        type=float,
        default=None,
        help="band around each detector where its neighbour also detects (20; 0: none)",
    )
    p.add_argument("--only", choices=("ours", "reference"), default=None)
    p.add_argument(
        "--ref-index",
        default="last_object_table",
        choices=("last_object_table", "baseline"),
        help="lsst-dax-apdb dia_object_index mode (last_object_table)",
    )
    p.add_argument(
        "--max-locks",
        type=int,
        default=1024,
        help="the server's max_locks_per_transaction (1024; PostgreSQL's default is 64, where "
        "our stores of more than 48 DiaObjects lock partitions instead of objects)",
    )
    p.add_argument("--output", type=Path, default=REPO / "bench/results/apdb_concurrency.json")
    args = p.parse_args(argv)
    if args.quick and args.workers == [1, 8, 16, 32]:
        args.workers = [1, 8]
    return args


# -- one cycle, run by a worker --------------------------------------------------------
def run_cycle(backend, sky: Sky, cycle: Cycle) -> dict:
    """Run one detector-visit; return its timings, counts and stored object ids."""
    c = sky.config
    ra, dec = sky.centre(cycle)
    mjd = cycle.mjd(c)
    rec: dict = {"visit": cycle.visit(c), "cell": cycle.cell, "phase": "objects"}
    t = time.perf_counter()
    objs = backend.read_objects(ra, dec, sky.read_radius())
    rec["objects"], t = time.perf_counter() - t, time.perf_counter()
    ids = objs["diaObjectId"].to_numpy(np.int64)
    rec["phase"] = "sources"
    src = backend.read_sources(mjd, ids)
    rec["sources"], t = time.perf_counter() - t, time.perf_counter()
    rec["phase"] = "forced"
    frc = backend.read_forced(mjd, ids)
    rec["forced"], t = time.perf_counter() - t, time.perf_counter()
    objects, sources, forced = sky.cycle_frames(cycle, objs)
    rec["compute"], t = time.perf_counter() - t, time.perf_counter()
    rec["phase"] = "store"
    backend.store(mjd, objects, sources, forced)
    rec["store"] = time.perf_counter() - t
    rec.update(
        phase=None,
        n_read=(len(objs), len(src), len(frc)),
        n_stored=(len(objects), len(sources), len(forced)),
        object_ids=objects["diaObjectId"].to_numpy(np.int64),
    )
    return rec


def _worker(kind, handle, sky, cycles, counter, barrier, done, results) -> None:
    records: list[dict] = []
    cpu = 0.0
    try:
        backend = open_backend(kind, handle)
        barrier.wait(timeout=600)
        cpu0 = time.process_time()
        while True:
            with counter.get_lock():
                i = counter.value
                counter.value += 1
            if i >= len(cycles):
                break
            try:
                records.append(run_cycle(backend, sky, cycles[i]))
            except Exception as exc:  # every failure is counted, none stops the run
                records.append(
                    {
                        "visit": cycles[i].visit(sky.config),
                        "cell": cycles[i].cell,
                        "error": describe_error(exc),
                    }
                )
        cpu = time.process_time() - cpu0
        results.put((records, cpu))
        done.wait(timeout=600)  # keep the connections until the server CPU is read
        backend.close()
    except BaseException:
        results.put(([{"error": "worker crashed: " + traceback.format_exc()[-500:]}], cpu))


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of the raised error, with the driver's error when chained."""
    text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    if root is not exc:
        text += f" <- {type(root).__name__}: {(str(root).splitlines() or [''])[0][:160]}"
    return text


# -- server CPU from /proc ----------------------------------------------------------------
def server_cpu_seconds(data_dir: Path) -> float:
    """CPU seconds of the postmaster, its live children and its exited children."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    def stat(p: int) -> list[str]:
        text = Path(f"/proc/{p}/stat").read_text()
        return text[text.rindex(")") + 2 :].split()

    fields = stat(pid)  # fields[11:15] = utime stime cutime cstime
    total = sum(int(x) for x in fields[11:15])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = stat(int(entry))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if int(f[1]) == pid:
            total += int(f[11]) + int(f[12])
    return total / tick


# -- a whole run for one implementation and one W ---------------------------------------------
def measure(pg, kind, handle, url, sky, cycles, workers) -> dict:
    """Run ``cycles`` with ``workers`` processes; return the raw results."""
    import sqlalchemy as sa

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("i", 0)
    barrier = ctx.Barrier(workers + 1)
    done = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(kind, handle, sky, cycles, counter, barrier, done, results)
        )
        for _ in range(workers)
    ]
    before = _table_counts(url)
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    cpu_before = server_cpu_seconds(pg.data_dir)
    t0 = time.perf_counter()
    out = [results.get(timeout=3600) for _ in procs]
    wall = time.perf_counter() - t0
    cpu_after = server_cpu_seconds(pg.data_dir)
    done.set()
    for p in procs:
        p.join(timeout=120)
    records = [r for recs, _ in out for r in recs]
    after = _table_counts(url)
    from apdb.sql.integrity import check_integrity

    engine = sa.create_engine(url.replace("+psycopg2", "+psycopg"))
    with engine.connect() as conn:
        tables = {"ApdbVisitDetector": None} if kind == "reference" else None
        integrity = check_integrity(conn, tables=tables)
    engine.dispose()
    return {
        "records": records,
        "wall_s": wall,
        "client_cpu_s": sum(cpu for _, cpu in out),
        "server_cpu_s": cpu_after - cpu_before,
        "rows_before": before,
        "rows_after": after,
        "integrity": integrity,
    }


def _table_counts(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    from apdb.sql.integrity import table_counts

    engine = sa.create_engine(url.replace("+psycopg2", "+psycopg"))
    with engine.connect() as conn:
        out = table_counts(conn, ("DiaObject", "DiaSource", "DiaForcedSource"))
    engine.dispose()
    return out


def prefill(kind: str, handle: object, sky: Sky) -> int:
    """Store the history visits of every cell, sequentially; return failures."""
    backend = open_backend(kind, handle)
    failures = 0
    try:
        for v in range(sky.config.history_visits):
            for cell in range(sky.config.n_cells):
                try:
                    run_cycle(backend, sky, Cycle(v, cell))
                except Exception as exc:
                    failures += 1
                    text = describe_error(exc)
                    print(f"  prefill {kind} visit {v} cell {cell}: {text}", file=sys.stderr)
    finally:
        backend.close()
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when ours failed or broke integrity."""
    args = parse_args(argv)
    from apdb.testing import TemporaryPostgres

    # A plain `kill` unwinds through the context managers (the server is removed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    config = FieldConfig()
    if args.quick:
        config = FieldConfig(cols=4, rows=4, measured_visits=2)
    if args.measured_visits:
        config.measured_visits = args.measured_visits
    if args.edge_arcsec is not None:
        config.edge_arcsec = args.edge_arcsec
    sky = Sky(config)
    kinds = [k for k in ("ours", "reference") if args.only in (None, k)]
    measured = [
        Cycle(config.history_visits + v, cell)
        for v in range(config.measured_visits)
        for cell in range(config.n_cells)
    ]
    load = os.getloadavg()
    print(
        f"sky: {config.cols}x{config.rows} detectors ({config.spacing_deg} deg squares, "
        f"{config.radius_deg} deg cones), "
        f"{sky.ra.size} static objects, {config.history_visits} history visits, "
        f"{len(measured)} measured detector-visits per W; load average {load[0]:.1f}",
        flush=True,
    )
    results: list[dict] = []
    # As docs/engine.md asks of operators: room in the lock table for one
    # advisory lock per DiaObject of every concurrent store.
    settings = {"max_connections": "200", "max_locks_per_transaction": str(args.max_locks)}
    with TemporaryPostgres(settings=settings) as pg:
        handles = {}
        for kind in kinds:
            driver = "psycopg" if kind == "ours" else "psycopg2"
            url = _create(pg, f"{kind}_base", driver)
            handles[kind] = create_database(kind, url, args.ref_index)
            t = time.perf_counter()
            failed = prefill(kind, handles[kind], sky)
            print(
                f"prefill {kind}: {config.history_visits * config.n_cells} detector-visits "
                f"in {time.perf_counter() - t:.1f} s, {failed} failures",
                flush=True,
            )
        for w in args.workers:
            for kind in kinds:
                driver = "psycopg" if kind == "ours" else "psycopg2"
                name = f"{kind}_w{w}"
                pg.create_database(name, template=f"{kind}_base")
                url = _url(pg, name, driver)
                handle = url if kind == "ours" else handles[kind].model_copy(update={"db_url": url})
                raw = measure(pg, kind, handle, url, sky, measured, w)
                summary = summarize(kind, w, raw)
                results.append(summary)
                print(
                    f"W={w:>2} {kind:<9} {summary['dv_per_s']:7.1f} detector-visits/s, "
                    f"{summary['failures']} failures, integrity errors "
                    f"{summary['integrity_errors']}",
                    flush=True,
                )
                pg.drop_database(name)
    print_report(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "apdb_concurrency",
        "config": asdict(config),
        "ref_index": args.ref_index,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": load},
        "results": results,
    }
    args.output.write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {args.output}")
    bad = [r for r in results if r["kind"] == "ours" and (r["failures"] or r["integrity_errors"])]
    return 1 if bad else 0


def _create(pg, name: str, driver: str) -> str:
    pg.create_database(name)
    return _url(pg, name, driver)


def _url(pg, name: str, driver: str) -> str:
    return pg.url(name, driver=driver)
