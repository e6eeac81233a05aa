"""``apdb-pipeline catalog INPUT...``: catalog-only mode (see `tasks.ingest.catalog_run`).

Two kinds of input:

- ``--format table`` (default): Parquet or CSV detection catalogs described
  by a column mapping (``--mapping FILE.yaml`` and/or ``--column``,
  ``--flux-unit``, ``--time-format``, ... options, which override the file);
- ``--format ztf``: ZTF alert packets (``.avro`` files, Parquet tables of
  packets, or directories of them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline catalog``."""
    parser.add_argument("inputs", nargs="+", type=Path, help="catalog or alert files/directories")
    parser.add_argument("--format", choices=["table", "ztf"], default="table", help="input kind")
    parser.add_argument("--apdb-url", required=True, help="APDB URL (created if empty)")
    parser.add_argument("--mapping", type=Path, help="YAML column mapping (docs/tasks.md)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="APDB=COLUMN",
        help="map a catalog column, e.g. --column flux=mag_psf (repeatable)",
    )
    parser.add_argument("--flux-unit", choices=["mag", "nJy", "uJy", "mJy", "Jy"])
    parser.add_argument("--time-format", choices=["jd", "mjd"])
    parser.add_argument("--time-scale", choices=["utc", "tai", "tt"])
    parser.add_argument("--time-reference", choices=["start", "mid"])
    parser.add_argument("--exposure-time", help="seconds, or a column name")
    parser.add_argument(
        "--band", action="append", default=[], metavar="VALUE=BAND", help="e.g. --band 1=g"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="data directory with images of some visits (forced photometry, cutouts)",
    )
    parser.add_argument(
        "--alerts-dir", type=Path, help="where alert files go (default: ./alerts)", default=None
    )
    parser.add_argument("--no-alerts", action="store_true", help="do not write alerts")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    from tasks.ingest.errors import IngestError

    out = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise IngestError(f"{what} must look like KEY=VALUE, got {value!r}")
        out[key.strip()] = target.strip()
    return out


def build_mapping(args: argparse.Namespace) -> Any:
    """Return the column mapping from ``--mapping`` and the overriding options."""
    import yaml

    from tasks.ingest.errors import IngestError
    from tasks.ingest.mapping import ColumnMapping

    data: dict[str, Any] = {}
    if args.mapping is not None:
        try:
            loaded = yaml.safe_load(args.mapping.read_text())
        except OSError as exc:
            raise IngestError(f"cannot read {args.mapping}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise IngestError(f"{args.mapping} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise IngestError(f"{args.mapping} must hold a YAML mapping")
        data = loaded
    columns = dict(data.get("columns") or {})
    columns.update(_pairs(args.column, "--column"))
    data["columns"] = columns
    if args.band:
        data["bands"] = {**(data.get("bands") or {}), **_pairs(args.band, "--band")}
    for option, key in (
        ("flux_unit", "flux_unit"),
        ("time_format", "time_format"),
        ("time_scale", "time_scale"),
        ("time_reference", "time_reference"),
    ):
        if getattr(args, option) is not None:
            data[key] = getattr(args, option)
    if args.exposure_time is not None:
        try:
            data["exposure_time"] = float(args.exposure_time)
        except ValueError:
            data["exposure_time"] = args.exposure_time
    return ColumnMapping.from_dict(data)


def main(args: argparse.Namespace) -> int:
    """Run catalog-only mode; exit status 1 on bad input, 2 when the APDB cannot be opened."""
    import pandas as pd

    from apdb import Apdb
    from apdb.errors import ApdbError
    from tasks.core.base import TaskError
    from tasks.data.layout import DataLayout
    from tasks.ingest.catalog import read_catalog, to_dia_sources
    from tasks.ingest.catalog_run import check_catalog_sources, run_catalog
    from tasks.ingest.ztf import read_ztf_alerts, ztf_dia_sources

    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    exposure_time = 0.0
    try:
        if args.format == "ztf":
            sources, _ = ztf_dia_sources(read_ztf_alerts(args.inputs))
            exposure_time = 30.0
        else:
            mapping = build_mapping(args)
            frames = [to_dia_sources(read_catalog(p), mapping) for p in args.inputs]
            sources = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            if sources["diaSourceId"].duplicated().any():
                raise TaskError("the catalogs share diaSourceId values")
        check_catalog_sources(sources)
        layout = None
        if args.data_dir is not None:
            if not args.data_dir.is_dir():
                raise TaskError(f"{args.data_dir} is not a directory")
            layout = DataLayout(args.data_dir)
    except TaskError as exc:
        print(f"apdb-pipeline catalog: error: {exc}", file=sys.stderr)
        return 1
    alert_dir = None if args.no_alerts else (args.alerts_dir or Path("alerts"))
    try:
        apdb = Apdb.create(args.apdb_url, exist_ok=True)
    except ApdbError as exc:
        print(f"apdb-pipeline catalog: error: cannot open the APDB: {exc}", file=sys.stderr)
        return 2
    try:
        with apdb:
            summary = run_catalog(
                sources, apdb, alert_dir=alert_dir, layout=layout, exposure_time=exposure_time
            )
    except (TaskError, ApdbError) as exc:
        print(f"apdb-pipeline catalog: error: {exc}", file=sys.stderr)
        return 1
    print(f"detections read: {len(sources)}")
    print(summary.format())
    if alert_dir is not None:
        print(f"alerts: {alert_dir}")
    print(f"APDB:   {args.apdb_url}")
    return 0
