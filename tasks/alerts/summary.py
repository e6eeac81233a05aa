"""A readable summary of an Avro alert file: totals, then one line per alert.

Backs ``apdb-pipeline alerts FILE.avro`` (`tasks.alerts.cli`).  Alerts are
listed by increasing ``diaSourceId``, whatever their order in the file.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import fastavro

from tasks.core.base import TaskError

__all__ = ["AlertFileError", "summarize_alerts"]

_CUTOUTS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")


class AlertFileError(TaskError):
    """An alert file is missing or is not an Avro container file."""


def _read(path: str | os.PathLike[str]) -> tuple[str, list[dict[str, Any]]]:
    """Return the writer schema's name and every alert of the file."""
    try:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema = reader.writer_schema
            name = schema.get("name", "?") if isinstance(schema, dict) else "?"
            return str(name), list(reader)
    except (OSError, ValueError, EOFError, fastavro.read.SchemaResolutionError) as exc:
        raise AlertFileError(f"{path} is not a readable Avro alert file: {exc}") from exc


def summarize_alerts(path: str | os.PathLike[str], limit: int | None = 20) -> str:
    """Return a readable summary of the alerts in an Avro container file.

    Parameters
    ----------
    path : path-like
        An alert file (one visit/detector).
    limit : `int` or `None`, optional
        Alerts listed one per line, by increasing ``diaSourceId`` (all when
        `None`); the totals cover every alert.

    Returns
    -------
    text : `str`
        A header line (file, count, schema), the visits/detectors and bands,
        the counts of first detections, Solar System alerts and cutouts, a
        column header, then one line per alert.

    Raises
    ------
    AlertFileError
        The file is missing or not an Avro container file.
    """
    schema_name, alerts = _read(path)
    lines = [f"{path}: {len(alerts)} alert(s), schema {schema_name}"]
    if not alerts:
        return "\n".join(lines)
    alerts.sort(key=lambda a: a["diaSourceId"])
    visits = Counter((a["diaSource"]["visit"], a["diaSource"]["detector"]) for a in alerts)
    bands = Counter(a["diaSource"].get("band") for a in alerts)
    n_sso = sum(a.get("ssSource") is not None for a in alerts)
    n_new = sum(a.get("diaObject") is not None and not a.get("prvDiaSources") for a in alerts)
    cutouts = Counter(kind for a in alerts for kind in _CUTOUTS if a.get(kind) is not None)
    lines.append(
        "visits/detectors: "
        + ", ".join(f"{v}/{d} ({n})" for (v, d), n in sorted(visits.items()))
        + "; bands: "
        + ", ".join(f"{b} ({n})" for b, n in sorted(bands.items(), key=lambda x: str(x[0])))
    )
    lines.append(
        f"first detections of an object: {n_new}; Solar System: {n_sso}; cutouts: "
        + ", ".join(f"{k[6:].lower()} {cutouts.get(k, 0)}" for k in _CUTOUTS)
    )
    lines.append(
        f"{'diaSourceId':>20} {'object':>20} {'band':>4} {'ra':>10} {'dec':>10} "
        f"{'psfFlux nJy':>18} {'snr':>7} {'prv':>4} {'forced':>6}"
    )
    shown = alerts if limit is None else alerts[:limit]
    lines.extend(_alert_line(alert) for alert in shown)
    if len(shown) < len(alerts):
        lines.append(f"... {len(alerts) - len(shown)} more (--all to list every alert)")
    return "\n".join(lines)


def _alert_line(alert: dict[str, Any]) -> str:
    """One alert: ids, band, position, difference flux, S/N and history lengths."""
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
