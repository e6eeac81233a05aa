"""Command line of the pipeline: ``apdb-pipeline SUBCOMMAND``.

Each subcommand lives in the module of the tasks it drives; this file only
dispatches.  A subcommand module exposes ``configure_parser(parser)`` and
``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys

from apdb.cli.dispatch import build_dispatch_parser, run_command

__all__ = ["main", "SUBCOMMANDS"]

# subcommand name -> (module, one-line help); each module is imported when the
# parser is built (see apdb.cli.dispatch).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("tasks.simulate.cli", "Simulate a small survey with known truth."),
    "associate": ("tasks.pipeline.associate", "Associate one visit/detector against an APDB."),
    "run": ("tasks.pipeline.cli", "Run the whole per-visit pipeline on a data directory."),
    "ingest": ("tasks.ingest.ingest_cli", "Ingest calibrated FITS images into a data directory."),
    "check": ("tasks.pipeline.check", "Report what a data directory holds and what can run."),
    "catalog": ("tasks.ingest.catalog_cli", "Catalog-only mode: detections to APDB and alerts."),
    "demo": ("tasks.pipeline.demo", "Simulate a small survey and run the pipeline on it."),
    "alerts": ("tasks.alerts.cli", "Summarise the alerts of an Avro alert file."),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand."""
    return build_dispatch_parser("apdb-pipeline", __doc__.splitlines()[0], SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 on a task or APDB error)."""
    from apdb.errors import ApdbError
    from tasks.core.base import TaskError

    return run_command(build_parser(), argv, (TaskError, ApdbError))


if __name__ == "__main__":
    sys.exit(main())
