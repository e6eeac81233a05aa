"""``apdb-pipeline ingest DATA_DIR FILE...``: calibrated FITS images into the data layout.

Each file is read through an instrument profile (``--profile``: a shipped
name, ``ours``, ``ztf``, ``decam``, ``generic``, or the path of a YAML file)
and written as a science exposure (default) or, with ``--role template``, as
a template (a deep coadd, or an earlier good image of the field) that
``apdb-pipeline run`` warps onto the science images when no DCR coadds exist.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline ingest``."""
    parser.add_argument("data_dir", type=Path, help="data directory (created if missing)")
    parser.add_argument("files", nargs="+", type=Path, help="calibrated FITS images")
    parser.add_argument(
        "--profile",
        default="generic",
        help="instrument profile: ours, ztf, decam, generic or a YAML path",
    )
    parser.add_argument("--role", choices=["science", "template"], default="science")
    parser.add_argument(
        "--mask", type=Path, action="append", default=[], help="mask file, one per image, in order"
    )
    parser.add_argument(
        "--variance",
        type=Path,
        action="append",
        default=[],
        help="variance-like file (kind set by the profile), one per image, in order",
    )
    parser.add_argument("--hdu", default=None, help="image HDU (index or EXTNAME)")
    parser.add_argument("--zero-point", type=float, help="AB magnitude of one image unit")
    parser.add_argument("--visit", type=int, help="visit number (one image only)")
    parser.add_argument("--detector", type=int, help="detector number")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def main(args: argparse.Namespace) -> int:
    """Ingest the files; exit status 1, with nothing written, when any file is bad."""
    from tasks.core.base import TaskError
    from tasks.data.layout import DataLayout
    from tasks.ingest.fits_ingest import ingest_image, read_image
    from tasks.ingest.profiles import load_profile

    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    hdu = args.hdu
    if hdu is not None and hdu.lstrip("-").isdigit():
        hdu = int(hdu)
    try:
        for option, values in (("--mask", args.mask), ("--variance", args.variance)):
            if values and len(values) != len(args.files):
                raise TaskError(f"give {option} once per image ({len(args.files)}), or not at all")
        if args.visit is not None and len(args.files) > 1:
            raise TaskError("--visit applies to one image at a time")
        profile = load_profile(args.profile)
        # every file is read (and refused) before anything is written: a bad
        # file leaves the data directory exactly as it was
        exposures = []
        for k, path in enumerate(args.files):
            try:
                exposures.append(
                    read_image(
                        path,
                        profile,
                        mask_path=args.mask[k] if args.mask else None,
                        variance_path=args.variance[k] if args.variance else None,
                        hdu=hdu,
                        zero_point=args.zero_point,
                        visit=args.visit,
                        detector=args.detector,
                        template=args.role == "template",
                    )
                )
            except TaskError as exc:
                message = str(exc)
                if path.name not in message:
                    message = f"{path.name}: {message}"
                raise TaskError(message) from None
        layout = DataLayout(args.data_dir)
        for path, exposure in zip(args.files, exposures, strict=True):
            result = ingest_image(layout, exposure, role=args.role)
            rel = result.path.relative_to(layout.root)
            print(
                f"{path.name} -> {rel} (visit {result.visit} det {result.detector} "
                f"band {result.band}, {result.role})"
            )
    except TaskError as exc:
        print(f"apdb-pipeline ingest: error: {exc}", file=sys.stderr)
        return 1
    return 0
