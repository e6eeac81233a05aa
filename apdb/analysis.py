"""The analyst's view: light curves from the APDB and readable alert summaries.

- `light_curve` reads every detection and forced measurement of a DiaObject
  (the ``DiaLightCurve`` view of the migrations: fluxes in nJy, times in
  MJD TAI, all bands), `plot_light_curve` draws it with matplotlib;
- `summarize_alerts` prints one line per alert of an Avro alert file.

These back the ``apdb lightcurve DIAOBJECTID [URL] --plot FILE.png`` and
``apdb alerts FILE.avro`` commands (`apdb.cli.lightcurve`, `apdb.cli.alerts`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from apdb.errors import ApdbError

__all__ = [
    "LIGHT_CURVE_COLUMNS",
    "busiest_dia_objects",
    "light_curve",
    "light_curve_report",
    "plot_light_curve",
    "summarize_alerts",
]

LIGHT_CURVE_COLUMNS = [
    "diaObjectId",
    "kind",
    "measurementId",
    "visit",
    "detector",
    "band",
    "midpointMjdTai",
    "ra",
    "dec",
    "psfFlux",
    "psfFluxErr",
    "scienceFlux",
    "scienceFluxErr",
]
"""Columns of the ``DiaLightCurve`` view (``kind`` is 'detection' or 'forced')."""

_VIEW = sa.table("DiaLightCurve", *(sa.column(c) for c in LIGHT_CURVE_COLUMNS))
_BAND_COLORS = {
    "u": "#56b4e9",
    "g": "#009e73",
    "r": "#e69f00",
    "i": "#d55e00",
    "z": "#cc79a7",
    "y": "#000000",
}


def _engine(db: sa.Engine | str) -> sa.Engine:
    return sa.create_engine(db) if isinstance(db, str) else db


def light_curve(db: sa.Engine | str, dia_object_id: int) -> pd.DataFrame:
    """Return the light curve of a DiaObject: detections and forced photometry.

    Parameters
    ----------
    db : `sqlalchemy.Engine` or `str`
        The APDB (engine or URL).
    dia_object_id : `int`
        The object.

    Returns
    -------
    curve : `pandas.DataFrame`
        `LIGHT_CURVE_COLUMNS`, ordered by time then kind; fluxes in nJy
        (NULL read as NaN).

    Raises
    ------
    ApdbError
        If the database has no ``DiaLightCurve`` view (not migrated to the
        revision that adds it) or cannot be read.
    """
    query = (
        sa.select(_VIEW)
        .where(_VIEW.c.diaObjectId == sa.bindparam("oid", int(dia_object_id), sa.BigInteger))
        .order_by(_VIEW.c.midpointMjdTai, _VIEW.c.kind)
    )
    engine = _engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbError(f"cannot read the light curve of DiaObject {dia_object_id}: {exc}") from exc
    curve = pd.DataFrame(rows, columns=LIGHT_CURVE_COLUMNS)
    for column in (
        "midpointMjdTai",
        "ra",
        "dec",
        "psfFlux",
        "psfFluxErr",
        "scienceFlux",
        "scienceFluxErr",
    ):
        curve[column] = pd.to_numeric(curve[column], errors="coerce").astype(np.float64)
    return curve


def busiest_dia_objects(db: sa.Engine | str, limit: int = 5) -> pd.DataFrame:
    """Return the DiaObjects with the most measurements (``diaObjectId``, ``n``)."""
    n = sa.func.count().label("n")
    query = (
        sa.select(_VIEW.c.diaObjectId, n)
        .group_by(_VIEW.c.diaObjectId)
        .order_by(n.desc(), _VIEW.c.diaObjectId)
        .limit(limit)
    )
    engine = _engine(db)
    try:
        with engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).all(), columns=["diaObjectId", "n"])
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbError(f"cannot list DiaObjects: {exc}") from exc


def plot_light_curve(
    curve: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Draw a multi-band light curve (difference and direct-image flux) to a PNG.

    Detections are filled markers, forced measurements open ones; one
    colour per band.  Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(8, 6), constrained_layout=True)
    for ax, (flux, err, label) in zip(
        axes,
        (
            ("psfFlux", "psfFluxErr", "difference flux (nJy)"),
            ("scienceFlux", "scienceFluxErr", "direct-image flux (nJy)"),
        ),
        strict=True,
    ):
        for (band, kind), rows in curve.groupby(["band", "kind"], sort=True):
            color = _BAND_COLORS.get(str(band), "grey")
            forced = kind == "forced"
            ax.errorbar(
                rows["midpointMjdTai"],
                rows[flux],
                yerr=rows[err],
                fmt="o",
                ms=5,
                color=color,
                mfc="none" if forced else color,
                label=f"{band} {'forced' if forced else 'detected'}",
            )
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.set_ylabel(label)
    axes[-1].set_xlabel("MJD (TAI)")
    axes[0].legend(fontsize=8, ncol=3)
    if title:
        axes[0].set_title(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize_alerts(path: str | os.PathLike[str], limit: int | None = 20) -> str:
    """Return a readable summary of the alerts in an Avro container file.

    Parameters
    ----------
    path : path-like
        An alert file (one visit/detector).
    limit : `int` or `None`, optional
        Alerts listed one per line (all when `None`); the totals cover all.
    """
    import fastavro

    try:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema_name = reader.writer_schema.get("name", "?")
            alerts = list(reader)
    except (OSError, ValueError, EOFError) as exc:
        raise ApdbError(f"{path} is not a readable Avro alert file: {exc}") from exc
    lines = [f"{path}: {len(alerts)} alert(s), schema {schema_name}"]
    if not alerts:
        return "\n".join(lines)
    visits = Counter((a["diaSource"]["visit"], a["diaSource"]["detector"]) for a in alerts)
    bands = Counter(a["diaSource"].get("band") for a in alerts)
    n_sso = sum(a.get("ssSource") is not None for a in alerts)
    n_new = sum(a.get("diaObject") is not None and not a.get("prvDiaSources") for a in alerts)
    cutouts = Counter(
        kind
        for a in alerts
        for kind in ("cutoutDifference", "cutoutScience", "cutoutTemplate")
        if a.get(kind) is not None
    )
    lines.append(
        "visits/detectors: "
        + ", ".join(f"{v}/{d} ({n})" for (v, d), n in sorted(visits.items()))
        + "; bands: "
        + ", ".join(f"{b} ({n})" for b, n in sorted(bands.items(), key=lambda x: str(x[0])))
    )
    lines.append(
        f"first detections of an object: {n_new}; Solar System: {n_sso}; cutouts: "
        + ", ".join(
            f"{k[6:].lower()} {cutouts.get(k, 0)}"
            for k in ("cutoutDifference", "cutoutScience", "cutoutTemplate")
        )
    )
    lines.append(
        f"{'diaSourceId':>20} {'object':>20} {'band':>4} {'ra':>10} {'dec':>10} "
        f"{'psfFlux nJy':>18} {'snr':>7} {'prv':>4} {'forced':>6}"
    )
    for alert in alerts[: limit if limit is not None else len(alerts)]:
        lines.append(_alert_line(alert))
    if limit is not None and len(alerts) > limit:
        lines.append(f"... {len(alerts) - limit} more (--all to list every alert)")
    return "\n".join(lines)


def _alert_line(alert: dict[str, Any]) -> str:
    src = alert["diaSource"]
    if alert.get("ssSource") is not None:
        owner = f"SSO {alert['ssSource']['ssObjectId']}"
    elif alert.get("diaObject") is not None:
        owner = str(alert["diaObject"]["diaObjectId"])
    else:
        owner = "-"
    flux = src.get("psfFlux")
    err = src.get("psfFluxErr")
    flux_text = (
        "-" if flux is None else f"{flux:.0f}±{err:.0f}" if err is not None else f"{flux:.0f}"
    )
    snr = src.get("snr")
    return (
        f"{alert['diaSourceId']:>20} {owner:>20} {src.get('band') or '-':>4} "
        f"{src['ra']:>10.5f} {src['dec']:>10.5f} {flux_text:>18} "
        f"{'-' if snr is None else f'{snr:.1f}':>7} {len(alert.get('prvDiaSources') or []):>4} "
        f"{len(alert.get('prvDiaForcedSources') or []):>6}"
    )


def light_curve_report(db: sa.Engine | str, dia_object_id: int, plot: Path | None = None) -> int:
    """Print a DiaObject's light curve (and plot it); return a command exit status."""
    curve = light_curve(db, dia_object_id)
    if curve.empty:
        print(f"DiaObject {dia_object_id}: no measurements")
        return 1
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(curve.drop(columns=["diaObjectId", "ra", "dec"]).to_string(index=False))
    if plot is not None:
        path = plot_light_curve(curve, plot, title=f"DiaObject {dia_object_id}")
        print(f"plot written to {path}")
    return 0
