"""One visit end to end: a 4k×4k detector with ~10,000 DiaSources, per-stage times.

Simulates (not timed) one visit of one detector whose sky is crowded with
transients and variables, so that most detections on the difference image
are new DiaSources, then runs `ProcessVisitTask` (detection, final
characterization, DCR template, subtraction, detection, DiaPipelineTask,
PackageAlertsTask) once against a fresh APDB and prints the time of each
stage against the 60 s alert latency budget (Rubin OTT1).

    python bench/pipeline/bench_pipeline.py [--size 4096] [--transients 12000]
        [--apdb-url postgresql+psycopg://...]   # default: a SQLite file in a temp dir
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from apdb import Apdb
from tasks.data.layout import DataLayout
from tasks.pipeline.runner import RunSummary
from tasks.pipeline.stages import RunInputs
from tasks.pipeline.visit import STAGES, ProcessVisitConfig, ProcessVisitTask

BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="detector side in pixels")
    parser.add_argument("--transients", type=int, default=12000)
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--static", type=int, default=3000)
    parser.add_argument("--apdb-url", default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here")
    args = parser.parse_args()
    from tasks.simulate import SimulationConfig, simulate_survey

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        config = SimulationConfig.benchmark(
            detector_size=(args.size, args.size),
            n_static=args.static,
            n_variable=args.variables,
            n_transient=args.transients,
        )
        start = time.perf_counter()
        if not DataLayout(root).visits_path.exists():
            simulate_survey(config, root)
        print(f"simulated in {time.perf_counter() - start:.0f} s (not part of the timing)")
        layout = DataLayout(root, output_root=Path(tmp) / "out")
        url = args.apdb_url or f"sqlite:///{Path(tmp) / 'apdb.sqlite3'}"
        process = ProcessVisitConfig()
        process.packageAlerts.alertWriteLocation = str(Path(tmp) / "out" / "alerts")
        task = ProcessVisitTask(config=process)
        visit = layout.visits()[0]
        with Apdb.create(url, exist_ok=True) as apdb:
            start = time.perf_counter()
            result = task.run(RunInputs(layout), visit, 0, apdb)
            total = time.perf_counter() - start
        summary = RunSummary()
        summary.add(result)
        summary.wall_seconds = total
    meta = task.metadata
    cpu = {
        stage: meta[f"{stage}EndCpuTime"] - meta[f"{stage}StartCpuTime"]
        for stage in STAGES
        if f"{stage}EndCpuTime" in meta
    }
    print(f"{args.size}x{args.size} visit, APDB {url.split(':')[0]}, load average {_load()}")
    print(summary.format())
    print("stage              wall s    CPU s")
    for stage in STAGES:
        if stage in result.timings:
            print(f"  {stage:<16} {result.timings[stage]:7.2f}  {cpu[stage]:7.2f}")
    total_cpu = sum(cpu.values())
    alerts = result.timings.get("alerts", float("nan"))
    print(
        f"end to end: {total:.1f} s wall, {total_cpu:.1f} s CPU for {result.nDiaSources} "
        f"DiaSources = {total / BUDGET_S:.2f} (wall) / {total_cpu / BUDGET_S:.2f} (CPU) of the "
        f"{BUDGET_S:.0f} s budget; alert packaging {result.nAlerts / alerts:,.0f} alerts/s wall"
    )
    slowest = max(STAGES, key=lambda s: cpu.get(s, 0.0))
    print(f"slowest stage (CPU): {slowest} ({cpu.get(slowest, 0.0):.1f} s)")


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
