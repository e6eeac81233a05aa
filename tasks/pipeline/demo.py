"""``apdb-pipeline demo``: simulate a small survey and run the whole chain on it.

No server and no set-up: the survey is simulated into a working directory,
the APDB is a SQLite file next to it, and the alerts are Avro files.  The
command ends by saying where everything is and how to look at it.  Running
it again reuses the simulated data and skips the visits already stored.

The working directory (about 125 MB for the default 6 visits) is, in order:
``--output DIR``; ``$APDB_PIPELINE_DATA/demo``; ``$XDG_CACHE_HOME/apdb-pipeline/demo``;
``~/.cache/apdb-pipeline/demo`` -- never the current directory unless asked.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apdb import Apdb

__all__ = ["DATA_ENV", "configure_parser", "default_output", "main"]

DATA_ENV = "APDB_PIPELINE_DATA"
"""Environment variable: the demo writes to ``$APDB_PIPELINE_DATA/demo``."""


def default_output() -> Path:
    """Where the demo writes when ``--output`` is not given.

    ``$APDB_PIPELINE_DATA/demo`` if set, else ``$XDG_CACHE_HOME/apdb-pipeline/demo``,
    else ``~/.cache/apdb-pipeline/demo``.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser() / "demo"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "apdb-pipeline" / "demo"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline demo``."""
    parser.add_argument(
        "--output",
        "--workdir",
        dest="output",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for the simulated data, the APDB and the alerts, about 125 MB "
        f"(default: ${DATA_ENV}/demo, else ~/.cache/apdb-pipeline/demo)",
    )
    parser.add_argument("--visits", type=int, default=6, help="visits to simulate (default 6)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed")
    parser.add_argument("--fresh", action="store_true", help="delete the working directory first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _simulate(data: Path, visits: int, seed: int) -> None:
    from tasks.simulate import SimulationConfig, simulate_survey

    config = SimulationConfig.tiny(seed=seed, n_visits=visits)
    print(f"simulating {visits} visits (1 detector, {config.detector_size[0]}² pixels) ...")
    start = time.perf_counter()
    simulate_survey(config, data)
    print(f"  done in {time.perf_counter() - start:.0f} s: {data}")


def _busiest_object(apdb: Apdb) -> str:
    """Id of the DiaObject with the most measurements (for the example command)."""
    top = apdb.get_busiest_dia_objects(1)
    return str(int(top["diaObjectId"].iloc[0])) if len(top) else "DIAOBJECTID"


def main(args: argparse.Namespace) -> int:
    """Simulate (if needed), run the pipeline, print where the results are."""
    from tasks.data.layout import DataLayout
    from tasks.pipeline.cli import open_apdb
    from tasks.pipeline.runner import run_pipeline
    from tasks.pipeline.visit import ProcessVisitConfig

    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    workdir: Path = (args.output or default_output()).expanduser().resolve()
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    print(f"demo directory: {workdir}  (--output DIR or ${DATA_ENV} to change)")
    data = workdir / "data"
    db_path = workdir / "apdb.sqlite3"
    url = f"sqlite:///{db_path}"
    layout = DataLayout(data)
    if not layout.visits_path.exists():
        _simulate(data, args.visits, args.seed)
    else:
        print(f"reusing the simulated survey in {data}")
    config = ProcessVisitConfig()
    alerts_dir = layout.output_root / "alerts"
    config.packageAlerts.alertWriteLocation = str(alerts_dir)
    print(f"running the pipeline into {url} ...")
    with open_apdb(url) as apdb:
        summary = run_pipeline(layout, apdb, config, progress=not args.no_progress)
        top = _busiest_object(apdb)
    print()
    print(summary.format())
    example = next(iter(sorted(alerts_dir.glob("*.avro"), reverse=True)), None)
    print()
    print("Where things are:")
    print(f"  simulated data  {data}")
    print(f"  APDB (SQLite)   {db_path}")
    print(f"  alerts (Avro)   {alerts_dir}  (one file per visit/detector)")
    print()
    print("How to look at them:")
    if example is not None:
        print(f"  apdb-pipeline alerts {example}")
    print(f"  apdb lightcurve {top} {url} --plot {workdir / 'lightcurve.png'}")
    print(
        f'  sqlite3 {db_path} \'SELECT "diaObjectId", ra, dec, "nDiaSources" '
        f'FROM "DiaObjectLatest" ORDER BY "nDiaSources" DESC LIMIT 5\''
    )
    if example is not None:
        print(
            f"  python -c \"import fastavro; a = next(fastavro.reader(open('{example}', 'rb')));"
            " print(a['diaSource'])\""
        )
    return 1 if summary.failed else 0


if __name__ == "__main__":  # pragma: no cover
    from tasks.cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))
