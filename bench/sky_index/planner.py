"""Planner measurement: OR'ed BETWEEN ranges vs a JOIN on unnest(ranges), on PostgreSQL.

Builds (once, reused when present) a table of N rows (default 10 million)
with a btree-indexed HEALPix order-29 ``pixelId``, uniformly spread over a
20 x 20 degree patch, then times region queries written three ways:

- ``or``: the cover as OR'ed ``pixelId BETWEEN lo AND hi`` (what apdb does);
- ``unnest``: the same ranges passed as two arrays and joined with
  ``unnest(lo, hi)``;
- ``or-fine``: OR'ed ranges from a cover at a much finer order (~1000+ ranges).

Each query is run ``--repeat`` times (warm cache); the median is reported with
the plan's top scan node.  Usage::

    python bench/sky_index/planner.py                 # throwaway server, 10M rows
    python bench/sky_index/planner.py --url postgresql+psycopg://...  --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import psycopg
import sqlalchemy as sa

from apdb.sky import Cone, Polygon, pixel_index, pixels_to_ranges
from apdb.sql.pgcopy import encode_rows, make_field

RA0, DEC0, SIDE = 150.0, 0.0, 20.0


def load(conn: psycopg.Connection, rows: int, chunk: int = 1_000_000) -> None:
    """Create and fill ``sky_bench`` unless it already has ``rows`` rows."""
    exists = conn.execute("SELECT to_regclass('sky_bench') IS NOT NULL").fetchone()[0]
    if exists and conn.execute("SELECT count(*) FROM sky_bench").fetchone()[0] == rows:
        print(f"reusing sky_bench ({rows} rows)")
        return
    conn.execute("DROP TABLE IF EXISTS sky_bench")
    conn.execute(
        'CREATE TABLE sky_bench (id bigint, "pixelId" bigint, ra double precision, '
        "dec double precision, flux real)"
    )
    rng = np.random.default_rng(42)
    t0 = time.perf_counter()
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ra = RA0 + rng.uniform(-SIDE / 2, SIDE / 2, n)
        dec = np.degrees(
            np.arcsin(
                rng.uniform(
                    np.sin(np.radians(DEC0 - SIDE / 2)), np.sin(np.radians(DEC0 + SIDE / 2)), n
                )
            )
        )
        cols = [
            (np.arange(start, start + n, dtype=np.int64), "long"),
            (pixel_index(ra, dec), "long"),
            (ra, "double"),
            (dec, "double"),
            (rng.normal(size=n).astype(np.float32), "float"),
        ]
        data = encode_rows([make_field(v, t) for v, t in cols], n, [None] * len(cols))
        with conn.cursor().copy("COPY sky_bench FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
    t1 = time.perf_counter()
    conn.execute('CREATE INDEX sky_bench_pix ON sky_bench ("pixelId")')
    conn.execute("VACUUM ANALYZE sky_bench")
    t2 = time.perf_counter()
    print(f"loaded {rows} rows in {t1 - t0:.1f} s, index + analyze {t2 - t1:.1f} s")


def _or_query(ranges: np.ndarray) -> tuple[str, list]:
    clause = " OR ".join(['"pixelId" BETWEEN %s AND %s'] * len(ranges))
    return f"SELECT id, ra, dec FROM sky_bench WHERE {clause}", ranges.ravel().tolist()


def _unnest_query(ranges: np.ndarray) -> tuple[str, list]:
    sql = (
        "SELECT s.id, s.ra, s.dec FROM sky_bench s "
        "JOIN unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi) "
        'ON s."pixelId" BETWEEN r.lo AND r.hi'
    )
    return sql, [ranges[:, 0].tolist(), ranges[:, 1].tolist()]


def _time(conn, sql: str, params: list, repeat: int) -> tuple[float, int, str]:
    plan = conn.execute("EXPLAIN " + sql, params).fetchall()
    node = next(
        (r[0].strip().lstrip("-> ").split("  ")[0] for r in plan if "Scan" in r[0]), plan[0][0]
    )
    times = []
    n = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(conn.execute(sql, params).fetchall())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n, node


def fine_ranges(region, target: int = 1000) -> np.ndarray:
    """Ranges of a cover at the first order giving at least ``target`` ranges."""
    for order in range(8, 21):
        ranges = pixels_to_ranges(region.cover_pixels(order), order)
        if len(ranges) >= target:
            return ranges
    return ranges


def run(url: str | None, rows: int, repeat: int) -> list[dict]:
    """Load the table and time every region with every query form."""
    regions = {
        "cone 0.1 deg": Cone(RA0, DEC0, 0.1),
        'detector 0.45 deg + 20"': Polygon(
            [RA0 - 0.22, RA0 + 0.22, RA0 + 0.22, RA0 - 0.22],
            [DEC0 - 0.22, DEC0 - 0.22, DEC0 + 0.22, DEC0 + 0.22],
            margin=20 / 3600,
        ),
        "cone 1 deg": Cone(RA0 + 3, DEC0 - 2, 1.0),
    }
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    results = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        load(conn, rows)
        for name, region in regions.items():
            ranges = region.ranges()
            for form, (sql, params) in {
                "or": _or_query(ranges),
                "unnest": _unnest_query(ranges),
                "or-fine": _or_query(fine_ranges(region)),
            }.items():
                n_ranges = len(params) // 2 if form != "unnest" else len(ranges)
                seconds, n, node = _time(conn, sql, params, repeat)
                row = dict(
                    region=name,
                    form=form,
                    ranges=n_ranges,
                    rows=n,
                    ms=round(1000 * seconds, 2),
                    plan=node,
                )
                results.append(row)
                print(
                    f"{name:<26s} {form:<8s} {n_ranges:>5d} ranges {n:>7d} rows "
                    f"{1000 * seconds:>9.2f} ms  {node}",
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.url:
        results = run(args.url, args.rows, args.repeat)
    else:
        from apdb.testing import TemporaryPostgres

        with TemporaryPostgres(settings={"shared_buffers": "1GB"}) as pg:
            results = run(pg.create_database("sky_bench"), args.rows, args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
