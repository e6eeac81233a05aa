"""Client CPU of the APDB calls of one detector-visit, phase by phase (W = 1).

``python -m bench.apdb_concurrency.cpu`` starts a throwaway PostgreSQL, fills
the sky of `bench.apdb_concurrency.workload` (``history_visits`` visits of
every cell, sequentially) and then runs the measured visits' cycles in this
process, recording the process CPU time (`time.process_time`) of each APDB
call: the three reads and the store.  The workload's own frame generation
(``Sky.cycle_frames``) is timed apart and is not APDB client CPU.
``--against DIR`` runs the same measurement a second time, in a subprocess,
with the ``apdb`` package of another checkout (e.g. a ``git worktree`` of an
older commit) on its own database of the same server: a before/after of the
same run.  ``--profile FILE`` writes a cProfile of the measured cycles.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHASES = ("objects", "sources", "forced", "store")


def measure(url: str, visits: int, measured: int, profile: str | None) -> dict:
    """Fill ``url`` and measure; return CPU ms per detector-visit by phase."""
    from apdb import Apdb
    from bench.apdb_concurrency.backends import OursCycleBackend
    from bench.apdb_concurrency.workload import Cycle, FieldConfig, Sky

    config = FieldConfig(history_visits=visits, measured_visits=measured)
    sky = Sky(config)
    Apdb.create(url).close()
    backend = OursCycleBackend(url)
    cpu = {p: 0.0 for p in (*PHASES, "compute")}
    rows = {"objects": 0, "sources": 0, "forced": 0, "stored": 0}
    n = 0
    prof = cProfile.Profile(time.process_time) if profile else None
    try:
        for v in range(visits + measured):
            timed = v >= visits
            for cell in range(config.n_cells):
                cycle = Cycle(v, cell)
                ra, dec = sky.centre(cycle)
                mjd = cycle.mjd(config)
                if timed and prof is not None:
                    prof.enable()
                c0 = time.process_time()
                objs = backend.read_objects(ra, dec, sky.read_radius())
                c1 = time.process_time()
                ids = objs["diaObjectId"].to_numpy(np.int64)
                src = backend.read_sources(mjd, ids)
                c2 = time.process_time()
                frc = backend.read_forced(mjd, ids)
                c3 = time.process_time()
                if prof is not None:
                    prof.disable()
                frames = sky.cycle_frames(cycle, objs)
                c4 = time.process_time()
                if timed and prof is not None:
                    prof.enable()
                backend.store(mjd, *frames)
                c5 = time.process_time()
                if prof is not None:
                    prof.disable()
                if timed:
                    n += 1
                    for p, d in zip(
                        (*PHASES, "compute"),
                        (c1 - c0, c2 - c1, c3 - c2, c5 - c4, c4 - c3),
                        strict=True,
                    ):
                        cpu[p] += d
                    rows["objects"] += len(objs)
                    rows["sources"] += len(src)
                    rows["forced"] += len(frc)
                    rows["stored"] += sum(len(f) for f in frames)
    finally:
        backend.close()
    if prof is not None:
        prof.dump_stats(profile)
    per = {p: 1e3 * s / n for p, s in cpu.items()}
    per["apdb_total"] = sum(per[p] for p in PHASES)
    return {
        "cycles": n,
        "cpu_ms_per_detector_visit": per,
        "rows_per_cycle": {k: v / n for k, v in rows.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.apdb_concurrency.cpu", description=__doc__)
    p.add_argument("--history-visits", type=int, default=8)
    p.add_argument("--measured-visits", type=int, default=3)
    p.add_argument("--against", type=Path, default=None, help="checkout to compare with")
    p.add_argument("--profile", default=None, help="cProfile output of the measured cycles")
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)  # the --against subprocess
    p.add_argument("--output", type=Path, default=None, help="JSON results")
    args = p.parse_args(argv)
    if args.url:  # child: measure on the given database, print JSON
        import apdb

        out = measure(args.url, args.history_visits, args.measured_visits, args.profile)
        out["apdb"] = str(Path(apdb.__file__).parent)
        print(json.dumps(out))
        return 0
    from apdb.testing import TemporaryPostgres

    results = {}
    with TemporaryPostgres() as pg:
        runs = [("this checkout", Path(__file__).resolve().parents[2])]
        if args.against is not None:
            runs.insert(0, (f"{args.against}", args.against.resolve()))
        for label, root in runs:
            url = pg.create_database(f"cpu{len(results)}")
            repo = Path(__file__).resolve().parents[2]
            # -S: no site hooks, so the editable install of this checkout cannot
            # shadow the other checkout's apdb (site-packages go on the path).
            path = [str(root), str(repo), *site.getsitepackages()]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
            cmd = [
                sys.executable,
                "-S",
                "-m",
                "bench.apdb_concurrency.cpu",
                "--url",
                url,
                "--history-visits",
                str(args.history_visits),
                "--measured-visits",
                str(args.measured_visits),
            ]
            if args.profile and label == "this checkout":
                cmd += ["--profile", args.profile]
            done = subprocess.run(
                cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False
            )
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    head = f"{'client CPU ms / detector-visit':<34}" + "".join(
        f"{k:>10}" for k in (*PHASES, "apdb_total")
    )
    print(head)
    for label, r in results.items():
        per = r["cpu_ms_per_detector_visit"]
        print(f"{label[-34:]:<34}" + "".join(f"{per[k]:>10.1f}" for k in (*PHASES, "apdb_total")))
        print(f"  (apdb from {r['apdb']}; rows read/stored per cycle {r['rows_per_cycle']})")
    if len(results) == 2:
        a, b = (r["cpu_ms_per_detector_visit"]["apdb_total"] for r in results.values())
        print(f"ratio (this / other): {b / a:.2f}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
