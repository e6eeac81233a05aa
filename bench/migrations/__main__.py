"""``python -m bench.migrations [--rows N]``: see the package docstring."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import psycopg
import sqlalchemy as sa

from apdb import Apdb, migrate
from apdb.testing import TemporaryPostgres
from bench.migrations.fill import fill
from bench.migrations.locks import BLOCKS_WRITERS, LockSampler

APP = "apdb-bench-migration"
BIG = ["DiaObject", "DiaSource", "DiaForcedSource"]


def _walk() -> list[tuple[str, str, str]]:
    """(direction, from, to): head down to 0001, then up to head."""
    revs = migrate.history()  # newest first
    down = [("downgrade", rev, prev) for rev, prev, _ in revs if prev is not None]
    up = [("upgrade", prev, rev) for rev, prev, _ in reversed(revs) if prev is not None]
    return down + up


def _scan_seconds(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            conn.execute('SELECT count(*) FROM "DiaSource"').fetchone()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(rows: int, lock_timeout_ms: int) -> dict:
    """Fill, walk the revisions, return the measurements."""
    with TemporaryPostgres() as pg:
        url = pg.create_database("apdb_bench")
        dsn = pg.dsn("apdb_bench")
        Apdb.create(url).close()
        print(f"filling {rows:,} DiaSources through Apdb.store ...", flush=True)
        fill_s = fill(url, rows)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()[0]
        scan = _scan_seconds(dsn)
        print(f"filled in {fill_s:.0f} s; database {size}; DiaSource scan {scan:.3f} s")
        engine = sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args={"application_name": APP}
        )
        steps = []
        for direction, src, dst in _walk():
            with LockSampler(dsn, APP, BIG) as sampler:
                start = time.perf_counter()
                getattr(migrate, direction)(engine, dst, lock={"lock_timeout_ms": lock_timeout_ms})
                elapsed = time.perf_counter() - start
            strongest = sampler.strongest()
            blocking = {
                f"{t}:{m}": round(s, 3) for (t, m), s in sampler.held.items() if m in BLOCKS_WRITERS
            }
            steps.append(
                {
                    "step": f"{direction} {src} -> {dst}",
                    "seconds": elapsed,
                    "ratio_to_scan": elapsed / scan,
                    "strongest": strongest,
                    "blocking_writers": blocking,
                }
            )
            print(f"  {steps[-1]['step']}: {elapsed:.2f} s", flush=True)
        engine.dispose()
    return {
        "rows": rows,
        "fill_seconds": fill_s,
        "db_size": size,
        "scan_seconds": scan,
        "steps": steps,
    }


def report(result: dict) -> str:
    """Markdown table of the measurements."""
    lines = [
        f"{result['rows']:,} DiaSources ({result['db_size']}); reference: a full scan of "
        f"DiaSource (`count(*)`) took {result['scan_seconds']:.3f} s in the same run.",
        "",
        "| step | time | x scan | strongest lock on DiaObject/DiaSource/DiaForcedSource "
        "(seen held) | blocks writers for |",
        "|---|---:|---:|---|---:|",
    ]
    for s in result["steps"]:
        strongest = s["strongest"]
        lock = "none"
        if strongest is not None:
            lock = f"{strongest[1]} on {strongest[0]} ({strongest[2]:.2f} s)"
        blocking = max(s["blocking_writers"].values(), default=0.0)
        block = f"{blocking:.2f} s" if blocking else "-"
        lines.append(
            f"| {s['step']} | {s['seconds']:.2f} s | {s['ratio_to_scan']:.1f} | {lock} | {block} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migrations", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="DiaSources (default 10 M)")
    parser.add_argument("--lock-timeout", type=int, default=1000, metavar="MS")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error("--rows must be positive")
    result = run(args.rows, args.lock_timeout)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
