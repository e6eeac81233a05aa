"""``apdb-pipeline associate``: run the DIA pipeline for one visit/detector against an APDB.

Inputs come from the documented data layout (`tasks.data.layout.DataLayout`):

- the science exposure ``exposures/visit_V/det_D.fits`` (WCS, visit info, PSF);
- the DiaSource table ``outputs/visit_V/det_D/diaSources.parquet`` (or ``--dia-sources``);
- the difference image ``outputs/visit_V/det_D/diffim.fits`` (for forced photometry;
  without it forced photometry is skipped with a warning) and, when present,
  the template ``outputs/visit_V/det_D/template.fits``;
- the Solar System predictions ``ssp/visit_V.parquet`` when present.

The results are stored in the APDB at ``--apdb-url`` (created with ``--create``)
and a JSON summary of the counts is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["configure_parser", "main"]

_log = logging.getLogger("tasks.pipeline.associate")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``associate`` arguments to ``parser``."""
    parser.add_argument("data_dir", help="root of the data layout")
    parser.add_argument("--visit", type=int, required=True, help="visit number")
    parser.add_argument("--detector", type=int, required=True, help="detector number")
    parser.add_argument(
        "--apdb-url",
        required=True,
        help="APDB database URL (sqlite:///PATH or postgresql+psycopg://...)",
    )
    parser.add_argument(
        "--create", action="store_true", help="create the APDB schema if it does not exist"
    )
    parser.add_argument(
        "--output-dir", default=None, help="pipeline output root (default: DATA_DIR/outputs)"
    )
    parser.add_argument(
        "--dia-sources",
        default=None,
        help="DiaSource Parquet file (default: the layout's diaSources output of the visit)",
    )
    parser.add_argument("--no-sso", action="store_true", help="skip Solar System association")
    parser.add_argument("--no-forced-phot", action="store_true", help="skip forced photometry")


def main(args: argparse.Namespace) -> int:
    """Run association for one visit/detector; print a JSON summary; return the exit status."""
    from apdb import Apdb, ApdbError
    from tasks.core.base import TaskError
    from tasks.data.layout import DataLayout
    from tasks.pipeline.diapipe import DiaPipelineConfig, DiaPipelineTask

    layout = DataLayout(args.data_dir, output_root=args.output_dir)
    visit, detector = args.visit, args.detector
    try:
        exposure = layout.read_exposure(visit, detector)
        if exposure.visit_info is None:
            exposure.visit_info = layout.read_visit_info(visit)
        if exposure.detector is None:
            exposure.detector = detector
        source_path = (
            Path(args.dia_sources)
            if args.dia_sources
            else layout.output_path("diaSources", visit, detector, ".parquet")
        )
        dia_sources = layout.read_table(source_path)
        diffim = _optional_exposure(layout, "diffim", visit, detector)
        template = _optional_exposure(layout, "template", visit, detector)
        sso = None
        if not args.no_sso and layout.has_ss_predictions(visit):
            sso = layout.read_ss_predictions(visit)
        config = DiaPipelineConfig()
        config.doSolarSystemAssociation = not args.no_sso
        if args.no_forced_phot or diffim is None:
            if diffim is None and not args.no_forced_phot:
                _log.warning(
                    "no difference image for visit %d detector %d: no forced photometry",
                    visit,
                    detector,
                )
            config.doRunForcedMeasurement = False
        apdb = (
            Apdb.create(args.apdb_url, exist_ok=True)
            if args.create
            else Apdb.from_url(args.apdb_url)
        )
        with apdb:
            result = DiaPipelineTask(config=config).run(
                dia_sources, diffim, exposure, template, apdb, sso
            )
    except (TaskError, ApdbError) as exc:
        print(f"apdb-pipeline associate: error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "visit": visit,
        "detector": detector,
        "nDiaSources": len(result.associatedDiaSources),
        "nNewDiaObjects": int(result.nNewDiaObjects),
        "nUpdatedDiaObjects": int(result.nUpdatedDiaObjects),
        "nAssociatedSsObjects": int(result.nAssociatedSsObjects),
        "nDroppedDiaSources": int(result.nDroppedDiaSources),
        "nDiaForcedSources": int(result.nDiaForcedSources),
    }
    print(json.dumps(summary))
    return 0


def _optional_exposure(layout, name: str, visit: int, detector: int):
    path = layout.output_path(name, visit, detector, ".fits")
    return layout.read_exposure_file(path) if path.exists() else None
