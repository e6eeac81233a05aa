"""The concurrent detector cycle on Citus (coordinator + 2 workers) against plain PostgreSQL.

The workload, the workers and the report are those of `bench.apdb_concurrency`
(W forked detector processes taking detector-visit cycles visit by visit:
DiaObjects in a 0.2° cone, their DiaSource and DiaForcedSource histories,
then the store; consecutive visits overlap and neighbouring detectors share
edge objects).  Both databases are ours (`apdb`), on servers started here
with the same settings: one `TemporaryPostgres`, and a `TemporaryCitus` with
two workers (``citus.shard_count`` 32, the default).  Both are prefilled with
the same history, sequentially.

Reported per W and backend: detector-visits/s, p50/p95 of each phase,
failures, integrity (lost/duplicated rows, open versions), and the server
CPU per detector-visit, split by node for Citus (coordinator, worker 1,
worker 2, read from ``/proc``).  The ratios Citus/PostgreSQL are measured in
the same run.  On one 2-core machine Citus cannot be faster (three servers
share the cores, every write crosses a local connection twice); what the
run gives is the cost per node, which `docs/benchmarks.md` turns into a
capacity model.

Run from the repository root::

    python -m bench.citus                 # 8x8 detectors, W = 1 4
    python -m bench.citus --quick         # 4x4 detectors, W = 1 4

Output: a table on stdout and ``bench/results/citus.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

from bench.apdb_concurrency import run as concurrency
from bench.apdb_concurrency.report import print_report, summarize
from bench.apdb_concurrency.workload import Cycle, FieldConfig, Sky

REPO = Path(__file__).resolve().parents[2]
_server_cpu = concurrency.server_cpu_seconds  # measure() reads it; NodeCpu stands in for it
SETTINGS = {"max_connections": "200", "max_locks_per_transaction": "1024"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        prog="python -m bench.citus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    p.add_argument("--quick", action="store_true", help="4x4 detectors, 2 measured visits")
    p.add_argument("--shards", type=int, default=32, help="shards per distributed table")
    return p.parse_args(argv)


class NodeCpu:
    """Server CPU seconds of each node, read from /proc (see `bench.apdb_concurrency`)."""

    def __init__(self, nodes: dict[str, Path]):
        self.nodes = nodes
        self.snapshots: list[dict[str, float]] = []

    def read(self, _data_dir: Path | None = None) -> float:
        """Total over the nodes; each call's per-node values are kept."""
        snap = {name: _server_cpu(d) for name, d in self.nodes.items()}
        self.snapshots.append(snap)
        return sum(snap.values())

    def last_delta(self) -> dict[str, float]:
        """Per-node CPU between the last two reads."""
        a, b = self.snapshots[-2], self.snapshots[-1]
        return {k: b[k] - a[k] for k in a}


def _measure(cpu: NodeCpu, url: str, sky: Sky, cycles: list[Cycle], workers: int) -> dict:
    saved = concurrency.server_cpu_seconds
    concurrency.server_cpu_seconds = cpu.read
    try:
        # measure() reads the server CPU right after the barrier and after the last worker.
        reader = type("Nodes", (), {"data_dir": None})()
        raw = concurrency.measure(reader, "ours", url, url, sky, cycles, workers)
    finally:
        concurrency.server_cpu_seconds = saved
    raw["node_cpu_s"] = cpu.last_delta()
    return raw


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 on failures or integrity errors."""
    args = parse_args(argv)
    from apdb import Apdb, ApdbConfig
    from apdb.config import CitusConfig
    from apdb.testing import TemporaryPostgres
    from apdb.testing.citus import TemporaryCitus

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = FieldConfig(cols=4, rows=4, measured_visits=2) if args.quick else FieldConfig()
    sky = Sky(config)
    measured = [
        Cycle(config.history_visits + v, cell)
        for v in range(config.measured_visits)
        for cell in range(config.n_cells)
    ]
    print(
        f"sky: {config.cols}x{config.rows} detectors, {sky.ra.size} static objects, "
        f"{config.history_visits} history visits, {len(measured)} measured detector-visits "
        f"per W; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results: list[dict] = []
    with TemporaryPostgres(settings=SETTINGS) as pg, TemporaryCitus(settings=SETTINGS) as cl:
        bases = {
            "postgres": pg.create_database("base"),
            "citus": cl.create_database("base"),
        }
        Apdb.create(bases["postgres"]).close()
        citus = ApdbConfig(
            db_url=bases["citus"], backend="citus", citus=CitusConfig(shard_count=args.shards)
        )
        Apdb.create(citus).close()
        for kind, url in bases.items():
            t = time.perf_counter()
            failed = concurrency.prefill("ours", url, sky)
            print(
                f"prefill {kind}: {config.history_visits * config.n_cells} detector-visits in "
                f"{time.perf_counter() - t:.1f} s, {failed} failures",
                flush=True,
            )
        cl.make_template("base")
        nodes = {"postgres": {"server": pg.data_dir}}
        nodes["citus"] = {"coordinator": cl.coordinator.data_dir}
        nodes["citus"].update({f"worker {i + 1}": w.data_dir for i, w in enumerate(cl.workers)})
        for w in args.workers:
            for kind in ("postgres", "citus"):
                name = f"w{w}"
                if kind == "postgres":
                    url = pg.create_database(name, template="base")
                else:
                    url = cl.create_database(name, template="base")
                raw = _measure(NodeCpu(nodes[kind]), url, sky, measured, w)
                summary = summarize(f"ours/{kind}", w, raw)
                done = max(summary["completed"], 1)
                summary["node_cpu_ms_per_dv"] = {
                    k: 1000.0 * v / done for k, v in raw["node_cpu_s"].items()
                }
                results.append(summary)
                print(
                    f"W={w} {kind:<8} {summary['dv_per_s']:6.1f} detector-visits/s, "
                    f"{summary['failures']} failures, integrity errors "
                    f"{summary['integrity_errors']}, server CPU ms/dv "
                    + ", ".join(f"{k} {v:.0f}" for k, v in summary["node_cpu_ms_per_dv"].items()),
                    flush=True,
                )
                (pg if kind == "postgres" else cl).drop_database(name)
    print_report(results)
    for w in args.workers:
        pair = {r["kind"]: r for r in results if r["workers"] == w}
        a, b = pair["ours/citus"], pair["ours/postgres"]
        if not (b["dv_per_s"] > 0 and a["completed"] and b["completed"]):
            print(f"W={w}: no ratio (a backend completed no detector-visit)")
            continue
        p50 = a["phases_ms"]["cycle"]["p50_ms"] / b["phases_ms"]["cycle"]["p50_ms"]
        cpu = sum(a["node_cpu_ms_per_dv"].values()) / sum(b["node_cpu_ms_per_dv"].values())
        print(
            f"W={w}: Citus/PostgreSQL throughput {a['dv_per_s'] / b['dv_per_s']:.2f}, "
            f"cycle p50 {p50:.2f}, server CPU per detector-visit {cpu:.2f}"
        )
    out = REPO / "bench" / "results" / "citus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print(f"written {out}")
    bad = [r for r in results if r["failures"] or r["integrity_errors"]]
    return 1 if bad else 0
