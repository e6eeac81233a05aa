"""Command line of the APDB engine: ``apdb SUBCOMMAND``.

This file only dispatches.  A subcommand module exposes
``configure_parser(parser)`` and ``main(args) -> int``; add a command by
adding one line to `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys

from apdb.cli.dispatch import build_dispatch_parser, run_command
from apdb.errors import ApdbError

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# subcommand name -> (module, one-line help); each module is imported when the
# parser is built (see apdb.cli.dispatch).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "create": ("apdb.cli.create", "Create an APDB (schema at the newest revision)."),
    "upgrade": ("apdb.cli.upgrade", "Upgrade the schema of an APDB (default: to head)."),
    "downgrade": ("apdb.cli.downgrade", "Downgrade the schema of an APDB to a revision."),
    "current": ("apdb.cli.current", "Print the schema revision of an APDB."),
    "history": ("apdb.cli.history", "List the schema revisions this package ships."),
    "info": ("apdb.cli.info", "Print row counts, schema revision and frozen config."),
    "lightcurve": ("apdb.cli.lightcurve", "Print (and plot) the light curve of a DiaObject."),
    "schema": ("apdb.cli.schema", "Compare with Rubin's apdb.yaml; draft a revision (diff)."),
    "ppdb": ("apdb.cli.ppdb", "Create a PPDB; replicate an APDB's replica chunks into it."),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand."""
    return build_dispatch_parser("apdb", __doc__.splitlines()[0], SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 on an APDB error)."""
    return run_command(build_parser(), argv, (ApdbError,))


if __name__ == "__main__":
    sys.exit(main())
