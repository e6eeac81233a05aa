"""APDB cycle benchmark: our `apdb` against Rubin's ``lsst-dax-apdb`` on one PostgreSQL.

A seeded deep field (one ~0.2 deg² field, ``--visits`` visits of
``--sources`` DiaSources each, 95 % of them on existing DiaObjects, a forced
source for every DiaObject) is run through both implementations in the same
process, visit by visit (the order of the two alternates between visits), each
on its own database of one throwaway PostgreSQL server.  Per visit and
implementation it times the APDB work of the pipeline:

``objects``  read the DiaObjects in the padded field (field radius + 20");
``sources``  read the 12-month DiaSource history of those objects;
``forced``   read the 12-month DiaForcedSource history of those objects;
``store``    store the new/updated DiaObjects, the DiaSources and the
             DiaForcedSources of the visit (one transaction).

The updated DiaObjects are computed once per visit by the workload generator
(identical input for both; its time is reported as ``compute``).  Every read is
checked against the truth (row counts); a mismatch is reported and makes the
exit status 1.  Then the same rows are loaded with raw binary COPY into plain
tables (no keys, no indexes) on the same server: the physical limit of a
store.

Needs the ``bench`` extra for the reference (``pip install -e '.[bench]'``:
``lsst-dax-apdb==30.2026.4100``, ``psycopg2-binary``) and the PostgreSQL
server binaries (``/usr/lib/postgresql/*/bin``; a throwaway server is started
with `apdb.testing.TemporaryPostgres`, as the ``postgres`` OS user when run as
root), or ``--server-dsn`` of a server you run yourself (databases are created
on it and dropped afterwards).

Run from the repository root::

    python -m bench.apdb_cycle --visits 15
    python bench/apdb_cycle/run.py --visits 3 --only ours

Output: a table on stdout and a JSON file under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from bench.apdb_cycle.backends import Backend, OursBackend, ReferenceBackend  # noqa: E402
from bench.apdb_cycle.copy_limit import CopyLimit  # noqa: E402
from bench.apdb_cycle.report import OURS_ROWS, OURS_SQLITE, print_report, summarize  # noqa: E402
from bench.apdb_cycle.server import Server  # noqa: E402
from bench.apdb_cycle.workload import DeepFieldWorkload, VisitData, WorkloadConfig  # noqa: E402

PHASES = ("objects", "sources", "forced", "store")
REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        prog="python -m bench.apdb_cycle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--visits", type=int, default=15, help="visits of the deep field (15)")
    p.add_argument("--sources", type=int, default=10_000, help="DiaSources per visit (10000)")
    p.add_argument(
        "--match-fraction",
        type=float,
        default=0.95,
        help="fraction of a visit's DiaSources on existing DiaObjects (0.95)",
    )
    p.add_argument("--seed", type=int, default=20261121, help="workload seed")
    p.add_argument(
        "--only",
        choices=("both", "ours", "reference"),
        default="both",
        help="which implementations to run (both)",
    )
    p.add_argument(
        "--ref-index",
        nargs="+",
        choices=("last_object_table", "baseline", "pix_id_iov"),
        default=["last_object_table"],
        help="ApdbSql dia_object_index mode(s); several run as separate references, each on "
        "its own database, and the fastest one is the headline (default last_object_table)",
    )
    p.add_argument("--no-copy-limit", action="store_true", help="skip the raw COPY measurement")
    p.add_argument(
        "--sqlite",
        action="store_true",
        help="also run ours on a SQLite file (a temporary directory), same visits, same run",
    )
    p.add_argument(
        "--rows",
        action="store_true",
        help="also run ours with history reads from the row tables instead of the history "
        "chunks (same server, same visits)",
    )
    p.add_argument(
        "--server-dsn",
        default=None,
        help="libpq DSN of an existing PostgreSQL server (superuser) instead of a throwaway one",
    )
    p.add_argument(
        "--pg-stats",
        action="store_true",
        help="enable pg_stat_statements and report the costliest statements per implementation",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile our implementation's phases; top functions printed, stats file saved",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="print the report of a saved JSON result and exit (runs nothing)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON output path (default bench/results/apdb_cycle-<UTC time>.json)",
    )
    return p.parse_args(argv)


def _timed(fn, *args, cpu: dict | None = None, key: str = ""):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    if cpu is not None:
        cpu[key] = time.process_time() - c0
    return out, time.perf_counter() - t0


def run_cycle(backend: Backend, vd: VisitData, profiler: cProfile.Profile | None) -> dict:
    """One visit's APDB work through one backend; phase times and checks."""
    objects, sources, forced = backend.prepare(vd)
    cpu: dict = {}
    if profiler is not None:
        profiler.enable()
    try:
        dia_objects, t_obj = _timed(backend.read_objects, vd, cpu=cpu, key="objects")
        ids = dia_objects["diaObjectId"].to_numpy(dtype=np.int64)
        history, t_src = _timed(backend.read_sources, vd, ids, cpu=cpu, key="sources")
        forced_history, t_frc = _timed(backend.read_forced_sources, vd, ids, cpu=cpu, key="forced")
        _, t_store = _timed(backend.store, vd, objects, sources, forced, cpu=cpu, key="store")
    finally:
        if profiler is not None:
            profiler.disable()
    counts = {
        "objects": len(dia_objects),
        "sources": 0 if history is None else len(history),
        "forced": 0 if forced_history is None else len(forced_history),
    }
    expected = {
        "objects": vd.expected_objects,
        "sources": vd.expected_source_history,
        "forced": vd.expected_forced_history,
    }
    times = {"objects": t_obj, "sources": t_src, "forced": t_frc, "store": t_store}
    times["total"] = sum(times[p] for p in PHASES)
    stored = len(objects) + len(sources) + len(forced)
    cpu["total"] = sum(cpu[p] for p in PHASES)
    return {
        "times": times,
        "client_cpu_s": cpu,
        "counts": counts,
        "ok": counts == expected,
        "rows_stored": stored,
        "store_rows_per_s": stored / t_store if t_store > 0 else None,
    }


def _environment(server: Server) -> dict:
    env: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "postgres": server.version(),
    }
    with contextlib.suppress(OSError):
        env["git_commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("lsst-dax-apdb", "sqlalchemy", "psycopg", "psycopg2-binary", "pandas", "numpy"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        saved["summary"] = summarize(saved["visits"], saved["implementations"])
        print_report(saved)
        return 0
    config = WorkloadConfig(
        visits=args.visits,
        n_sources=args.sources,
        match_fraction=args.match_fraction,
        seed=args.seed,
    )
    out_path = args.output or (
        REPO / "bench" / "results" / time.strftime("apdb_cycle-%Y%m%dT%H%M%SZ.json", time.gmtime())
    )
    print(
        f"deep field: {config.visits} visits x {config.n_sources} DiaSources, "
        f"{config.match_fraction:.0%} matched, cone r={config.radius_deg} deg "
        f"({config.area_deg2:.3f} deg2), seed {config.seed}",
        flush=True,
    )
    profiler = cProfile.Profile() if args.profile else None
    with contextlib.ExitStack() as stack, Server(args.server_dsn, pg_stats=args.pg_stats) as server:
        backends: list[Backend] = []
        if args.only in ("both", "reference"):
            for mode in dict.fromkeys(args.ref_index):
                url = server.create_database(f"bench_reference_{mode}", driver="psycopg2")
                backends.append(ReferenceBackend(url, config, mode))
        if args.only in ("both", "ours"):
            url = server.create_database("bench_ours", driver="psycopg")
            backends.append(OursBackend(url, config))
            if args.rows:
                url = server.create_database("bench_ours_rows", driver="psycopg")
                backends.append(OursBackend(url, config, name=OURS_ROWS, chunks=False))
            if args.sqlite:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="apdb_cycle_"))
                backends.append(
                    OursBackend(f"sqlite:///{tmp}/ours.sqlite3", config, name=OURS_SQLITE)
                )
        copy_limit = None
        if not args.no_copy_limit:
            server.create_database("bench_copy_limit", driver="psycopg")
            copy_limit = CopyLimit(server.dsn("bench_copy_limit"))
        # Untimed warm-up: one DiaObject read on the empty databases, so that one-time costs
        # (lazy imports, first connection, catalog caches) are reported apart from visit 1.
        warmup = {}
        first = DeepFieldWorkload(config).next_visit()
        for backend in backends:
            _, warmup[backend.name] = _timed(backend.read_objects, first)
        server.reset_stats()

        visits: list[dict] = []
        workload = DeepFieldWorkload(config)
        for vd in workload:
            record: dict = {
                "visit": vd.visit,
                "load_average_1min": os.getloadavg()[0],
                "band": vd.band,
                "mjd": vd.mjd,
                "compute_s": vd.compute_s,
                "rows": {
                    "DiaObject": len(vd.dia_objects),
                    "DiaSource": len(vd.dia_sources),
                    "DiaForcedSource": len(vd.dia_forced_sources),
                },
                "expected": {
                    "objects": vd.expected_objects,
                    "sources": vd.expected_source_history,
                    "forced": vd.expected_forced_history,
                },
                "results": {},
            }
            # Rotate who goes first, so neither side always meets a warmer/colder server.
            k = vd.index % len(backends) if backends else 0
            order = backends[k:] + backends[:k]
            for backend in order:
                prof = profiler if isinstance(backend, OursBackend) else None
                record["results"][backend.name] = run_cycle(backend, vd, prof)
            if copy_limit is not None:
                # The rows our store writes (all generated columns without it).
                ours = next((b for b in backends if b.name == OursBackend.name), None)
                frames = {
                    "DiaObject": vd.dia_objects,
                    "DiaSource": vd.dia_sources,
                    "DiaForcedSource": vd.dia_forced_sources,
                }
                if ours is not None:
                    frames = {t: ours.subset(t, df) for t, df in frames.items()}
                record["copy_limit"] = copy_limit.copy(frames)
            visits.append(record)
            _print_progress(record)

        stats = server.top_statements() if args.pg_stats else None
        copy_counts = copy_limit.check_counts() if copy_limit is not None else None
        if copy_limit is not None:
            copy_limit.close()
        for backend in backends:
            backend.close()
        env = _environment(server)

    names = [b.name for b in backends]
    summary = summarize(visits, names)
    result = {
        "benchmark": "apdb_cycle",
        "config": {**config.__dict__, "area_deg2": config.area_deg2, "ref_index": args.ref_index},
        "environment": env,
        "implementations": names,
        "warmup_first_read_s": warmup,
        "visits": visits,
        "summary": summary,
        "copy_limit_table_counts": copy_counts,
        "pg_stat_statements": stats,
    }
    print_report(result)
    if profiler is not None:
        prof_path = out_path.with_suffix(".prof")
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(prof_path)
        print(f"\ncProfile of {OursBackend.name} (cumulative, top 30); stats in {prof_path}")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=_json_default))
    print(f"\nJSON written to {out_path}")
    return 0 if summary["all_reads_correct"] else 1


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _print_progress(record: dict) -> None:
    parts = [f"visit {record['visit']} ({record['band']})"]
    for name, res in record["results"].items():
        t = res["times"]
        flag = "" if res["ok"] else " READ MISMATCH"
        parts.append(
            f"{name}: {t['total']:.2f}s (obj {t['objects']:.2f} src {t['sources']:.2f} "
            f"frc {t['forced']:.2f} store {t['store']:.2f}){flag}"
        )
    if "copy_limit" in record:
        parts.append(f"COPY {record['copy_limit']['total_s']:.2f}s")
    parts.append(f"load {record['load_average_1min']:.1f}")
    print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
