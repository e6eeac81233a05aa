"""``apdb lightcurve DIAOBJECTID [URL] --plot FILE.png``: a DiaObject's multi-band light curve."""

from __future__ import annotations

import argparse
from pathlib import Path

from apdb.cli._common import add_database_args, engine_from_args

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb lightcurve``."""
    parser.add_argument("dia_object_id", type=int, metavar="DIAOBJECTID", help="the DiaObject")
    add_database_args(parser)
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the light curve here")


def main(args: argparse.Namespace) -> int:
    """Print the detections and forced measurements; optionally plot them."""
    from apdb.analysis import light_curve_report

    engine = engine_from_args(args)
    try:
        return light_curve_report(engine, args.dia_object_id, args.plot)
    finally:
        engine.dispose()
