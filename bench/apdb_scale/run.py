"""APDB scale benchmark: a detector-sized cycle at 1 M and at 10 M DiaSources.

One APDB on a throwaway PostgreSQL is filled through the public API
(`Apdb.store`, one store per field and round, see `bench.apdb_scale.fields`):
``--fields`` fields (200) of ``--per-field`` static DiaObjects (2,000), 90 %
of them detected per visit, rounds 150 days apart.  Each time the fill
reaches a checkpoint of ``--rows`` (DiaSources, rounded up to whole rounds)
the next round starts with ``--measure`` measured fields: for each, a
detector-sized cycle through the public API, read ``--repeats`` times and
the median kept:

``objects``  `Apdb.get_dia_objects` of the field (radius + 20");
``sources``  `Apdb.get_dia_sources` of those objects (12-month window);
``forced``   `Apdb.get_dia_forced_sources` of those objects;
``store``    that field's store of the round (objects, sources, forced).

Every read is checked against the truth (row counts).  Per checkpoint the
report gives the table and index sizes, the ``diaObjectId`` correlation
statistic of DiaSource, and the DiaSource history read's plan with
``EXPLAIN (ANALYZE, BUFFERS)``: the plan our read uses (`apdb.sql.read_plan`
settings) and the planner's own choice, with server time and buffers.  The
ratios of the last checkpoint to the first are the result (target 0.95-1.2:
a detector-sized cycle as fast at 10 M as at 1 M).

Run from the repository root::

    python -m bench.apdb_scale                       # 1 M and 10 M
    python -m bench.apdb_scale --rows 200000,1000000 # a quick run

Output: a table on stdout and a JSON file (``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb
from apdb.sky import Cone
from apdb.sql.read_plan import read_plan
from apdb.sql.reads import history_window, id_filter
from bench.apdb_cycle.server import Server
from bench.apdb_scale.fields import ScaleConfig, ScaleSky

# ApdbHistoryChunk: the history chunks (revision 0008), their bytes in TOAST.
TABLES = ("DiaSource", "DiaObject", "DiaForcedSource", "ApdbHistoryChunk")
PHASES = ("objects", "sources", "forced", "store")


def _t(mjd: float) -> Time:
    return Time(mjd, format="mjd", scale="tai")


def sizes(dsn: str) -> dict[str, dict[str, float]]:
    """Rows and on-disk sizes (MB) of the APDB tables (with TOAST) and their indexes."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in TABLES:
            ident = psycopg.sql.Identifier(name)
            rows = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            heap, index, total = conn.execute(
                "SELECT pg_table_size(c.oid), pg_indexes_size(c.oid),"
                " pg_total_relation_size(c.oid) FROM pg_class c WHERE c.relname = %s",
                (name,),
            ).fetchone()
            corr = conn.execute(
                "SELECT correlation FROM pg_stats WHERE tablename = %s AND attname = 'diaObjectId'",
                (name,),
            ).fetchone()
            out[name] = {
                "rows": int(rows[0]),
                "heap_mb": heap / 2**20,
                "index_mb": index / 2**20,
                "total_mb": total / 2**20,
                "diaObjectId_correlation": None if corr is None else float(corr[0]),
            }
    return out


def analyze(dsn: str) -> None:
    """ANALYZE the APDB tables (statistics current before a checkpoint)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in TABLES:
            conn.execute(psycopg.sql.SQL("ANALYZE {}").format(psycopg.sql.Identifier(name)))


def explain_history(db: Apdb, mjd: float, ids: np.ndarray) -> dict[str, dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of the DiaSource history read: ours and the planner's."""
    table = db.schema_metadata.tables["DiaSource"]
    start, end = history_window("DiaSource", mjd, db.config.dia_source_history_months)
    where = sa.and_(
        table.c.midpointMjdTai >= start,
        table.c.midpointMjdTai < end,
        table.c.timeWithdrawnMjdTai.is_(None),
        id_filter(table.c.diaObjectId, ids, "postgresql"),
    )
    out = {}
    with db.engine.connect() as conn:
        plan = read_plan(table, conn.dialect)
        for label, extra in (("ours", None), ("planner default", {"enable_indexscan": "on"})):
            text = plan.explain(conn, where, extra, analyze=True)
            out[label] = {"plan": text, **_plan_summary(text)}
    return out


def _plan_summary(text: str) -> dict:
    """Scan node, execution time and shared buffers of an EXPLAIN ANALYZE text."""
    node = next(
        (k for k in ("Bitmap Heap Scan", "Index Only Scan", "Index Scan", "Seq Scan") if k in text),
        "?",
    )
    ms, hit, read = 0.0, 0, 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Execution Time:"):
            ms = float(s.split()[2])
    first_buffers = next((ln for ln in text.splitlines() if "Buffers:" in ln), "")
    for part in first_buffers.split("shared")[-1].split():
        if part.startswith("hit="):
            hit = int(part[4:])
        elif part.startswith("read="):
            read = int(part[5:])
    return {"node": node, "server_ms": ms, "buffers_hit": hit, "buffers_read": read}


def measure_field(db: Apdb, sky: ScaleSky, rnd: int, field: int, repeats: int) -> dict:
    """One measured detector-sized cycle (reads repeated, median kept), then its store."""
    c = sky.config
    visit, _, mjd = sky.visit_of(rnd, field)
    region = Cone(
        float(sky.ra0[field]), float(sky.dec0[field]), c.radius_deg + c.margin_arcsec / 3600
    )
    vt = _t(mjd)
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    cpu: list[float] = []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        objs = db.get_dia_objects(region)
        t1 = time.perf_counter()
        ids = objs["diaObjectId"].to_numpy(np.int64)
        # With the region, as Rubin's API is called: read from the history chunks.
        srcs = db.get_dia_sources(vt, region=region, object_ids=ids)
        t2 = time.perf_counter()
        frcs = db.get_dia_forced_sources(vt, region=region, object_ids=ids)
        t3 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        times["objects"].append(t1 - t0)
        times["sources"].append(t2 - t1)
        times["forced"].append(t3 - t2)
    # Truth: every object of the field; two rounds of detections (and forced sources).
    k = int(round(c.per_field * c.detect_fraction))
    window = c.round_days * np.arange(1, rnd + 1) < 360.0  # rounds rnd-1, rnd-2, ... inside
    hist = [r for r, inside in zip(range(rnd - 1, -1, -1), window, strict=True) if inside]
    want = {
        "objects": c.per_field,
        "sources": sum(c.per_field if r == 0 else k for r in hist),
        "forced": len(hist) * c.per_field if field < c.forced_fields else 0,
    }
    got = {"objects": len(objs), "sources": len(srcs), "forced": len(frcs)}
    rows = sky.rows(rnd, field)
    c0 = time.process_time()
    t0 = time.perf_counter()
    db.store(vt, rows.objects, rows.sources, rows.forced)
    times["store"].append(time.perf_counter() - t0)
    store_cpu = time.process_time() - c0
    return {
        "field": field,
        "visit": visit,
        "seconds": {p: statistics.median(v) for p, v in times.items()},
        "read_cpu_s": statistics.median(cpu),
        "store_cpu_s": store_cpu,
        "rows": got,
        "expected": want,
        "ok": got == want,
        "ids": ids,
        "mjd": mjd,
        "stored_rows": len(rows.objects) + len(rows.sources) + len(rows.forced),
        "stored_sources": len(rows.sources),
    }


def run(args: argparse.Namespace) -> dict:
    config = ScaleConfig(n_fields=args.fields, per_field=args.per_field)
    sky = ScaleSky(config)
    targets = sorted(int(float(r)) for r in args.rows.split(","))
    # Checkpoints at whole rounds: the measured round starts once the fill has
    # stored at least the target (the first round stores every object once).
    results = {"config": vars(args), "checkpoints": []}
    with Server(args.server_dsn) as server:
        url = server.create_database("apdb_scale")
        dsn = server.dsn("apdb_scale")
        results["server"] = server.version()
        db = Apdb.create(url)
        try:
            stored, rnd, t_fill = 0, 0, time.time()
            for target in targets:
                while stored < target:
                    for f in range(config.n_fields):
                        rows = sky.rows(rnd, f)
                        db.store(_t(rows.mjd), rows.objects, rows.sources, rows.forced)
                        stored += len(rows.sources)
                    rnd += 1
                    el = time.time() - t_fill
                    print(f"  round {rnd}: {stored:,} DiaSources ({el:.0f} s)", flush=True)
                analyze(dsn)
                print(f"checkpoint {stored:,} DiaSources: measuring round {rnd}", flush=True)
                at = stored
                fields = [measure_field(db, sky, rnd, f, args.repeats) for f in range(args.measure)]
                plans = explain_history(db, fields[0]["mjd"], fields[0]["ids"])
                cp = {
                    "target": target,
                    "dia_sources": at,
                    "round": rnd,
                    "fill_seconds": time.time() - t_fill,
                    "sizes": sizes(dsn),
                    "plans": plans,
                    "fields": [{k: v for k, v in x.items() if k != "ids"} for x in fields],
                }
                stored += sum(x["stored_sources"] for x in fields)
                # The rest of the round (the measured fields stored theirs).
                for f in range(args.measure, config.n_fields):
                    rows = sky.rows(rnd, f)
                    db.store(_t(rows.mjd), rows.objects, rows.sources, rows.forced)
                    stored += len(rows.sources)
                rnd += 1
                results["checkpoints"].append(cp)
                _print_checkpoint(cp)
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        finally:
            db.close()
    return results


def _median(cp: dict, key: str) -> float:
    return statistics.median(x["seconds"][key] for x in cp["fields"])


def _print_checkpoint(cp: dict) -> None:
    print(f"\n== {cp['dia_sources']:,} DiaSources (round {cp['round']}) ==")
    for name, s in cp["sizes"].items():
        corr = s["diaObjectId_correlation"]
        print(
            f"  {name:<16} {s['rows']:>11,} rows  heap {s['heap_mb']:>8.0f} MB"
            f"  indexes {s['index_mb']:>7.0f} MB  diaObjectId correlation "
            + ("-" if corr is None else f"{corr:.2f}")
        )
    for label, p in cp["plans"].items():
        print(
            f"  DiaSource history plan [{label}]: {p['node']}, {p['server_ms']:.1f} ms server,"
            f" {p['buffers_hit'] + p['buffers_read']:,} buffers ({p['buffers_read']:,} read)"
        )
    ok = all(x["ok"] for x in cp["fields"])
    row = "  ".join(f"{k} {_median(cp, k) * 1e3:.1f} ms" for k in PHASES)
    print(
        f"  median over {len(cp['fields'])} fields: {row}"
        f"  (rows checked: {'ok' if ok else 'MISMATCH'})"
    )


def print_ratios(results: dict) -> None:
    """Ratios of the last checkpoint's medians to the first one's."""
    cps = results["checkpoints"]
    if len(cps) < 2:
        return
    a, b = cps[0], cps[-1]
    print(
        f"\n{'phase':<10}{a['dia_sources']:>14,}{b['dia_sources']:>14,}"
        "   ratio (time at the larger / smaller)"
    )
    for k in (*PHASES, "cycle"):
        if k == "cycle":
            ta = sum(_median(a, p) for p in PHASES)
            tb = sum(_median(b, p) for p in PHASES)
        else:
            ta, tb = _median(a, k), _median(b, k)
        print(f"{k:<10}{ta * 1e3:>11.1f} ms{tb * 1e3:>11.1f} ms   {tb / ta:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.apdb_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rows", default="1000000,10000000", help="DiaSource checkpoints, comma separated"
    )
    parser.add_argument("--fields", type=int, default=200)
    parser.add_argument("--per-field", type=int, default=2000, help="DiaObjects per field")
    parser.add_argument("--measure", type=int, default=5, help="measured fields per checkpoint")
    parser.add_argument("--repeats", type=int, default=3, help="reads per measured field (median)")
    parser.add_argument("--server-dsn", default=None, help="existing server (default: throwaway)")
    parser.add_argument("--json", default="bench/results/apdb_scale.json")
    args = parser.parse_args(argv)
    results = run(args)
    print_ratios(results)
    bad = [x for cp in results["checkpoints"] for x in cp["fields"] if not x["ok"]]
    for x in bad:
        print(
            f"MISMATCH field {x['field']}: got {x['rows']}, expected {x['expected']}",
            file=sys.stderr,
        )
    return 1 if bad else 0
