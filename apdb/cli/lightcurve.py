"""``apdb lightcurve DIAOBJECTID [URL] --plot FILE.png``: a DiaObject's multi-band light curve.

The measurements come from `apdb.Apdb.get_light_curve`; this module prints
them as a fixed-format table (the same text on every backend) and draws
them with matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from apdb.cli._common import add_database_args, config_from_args

__all__ = [
    "configure_parser",
    "format_light_curve",
    "light_curve_figure",
    "main",
    "plot_light_curve",
]

_BAND_COLORS = {
    "u": "#56b4e9",
    "g": "#009e73",
    "r": "#e69f00",
    "i": "#d55e00",
    "z": "#cc79a7",
    "y": "#000000",
}

# Printed columns and their formats: MJD to 1e-6 day (0.09 s), fluxes to 0.1 nJy.
_TABLE_FORMATS = {
    "kind": "{}",
    "measurementId": "{}",
    "visit": "{}",
    "detector": "{}",
    "band": "{}",
    "midpointMjdTai": "{:.6f}",
    "psfFlux": "{:.1f}",
    "psfFluxErr": "{:.1f}",
    "scienceFlux": "{:.1f}",
    "scienceFluxErr": "{:.1f}",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb lightcurve``."""
    parser.add_argument("dia_object_id", type=int, metavar="DIAOBJECTID", help="the DiaObject")
    add_database_args(parser)
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the light curve here")


def format_light_curve(curve: pd.DataFrame) -> str:
    """Return the light curve as a table with fixed decimals (NaN printed as ``-``).

    Parameters
    ----------
    curve : `pandas.DataFrame`
        A frame from `apdb.Apdb.get_light_curve`.
    """
    header = list(_TABLE_FORMATS)
    cells = [header]
    for row in curve[header].itertuples(index=False):
        cells.append(
            [
                "-" if pd.isna(value) else fmt.format(value)
                for value, fmt in zip(row, _TABLE_FORMATS.values(), strict=True)
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return "\n".join(
        " ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    )


def light_curve_figure(curve: pd.DataFrame, title: str | None = None):
    """Draw a multi-band light curve: difference flux above, direct-image flux below.

    Detections are filled markers, forced measurements open ones; one
    colour per band.  The time axis shows plain MJD (TAI), no offset.

    Returns
    -------
    figure : `matplotlib.figure.Figure`
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
        # MJD ~ 6e4 spanning days: matplotlib would print "+6.1e4" and offsets.
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes[-1].set_xlabel("MJD (TAI)")
    axes[0].legend(fontsize=8, ncol=3)
    if title:
        axes[0].set_title(title)
    return fig


def plot_light_curve(
    curve: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Draw `light_curve_figure` to a PNG file and return its path."""
    import matplotlib.pyplot as plt

    fig = light_curve_figure(curve, title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    """Print the detections and forced measurements; optionally plot them.

    Returns 1 (with one line on stderr) when the DiaObject has no measurements.
    """
    from apdb import Apdb

    with Apdb.from_config(config_from_args(args)) as db:
        curve = db.get_light_curve(args.dia_object_id)
    if curve.empty:
        print(
            f"apdb lightcurve: error: DiaObject {args.dia_object_id} has no measurements "
            "in this APDB",
            file=sys.stderr,
        )
        return 1
    print(format_light_curve(curve))
    if args.plot is not None:
        path = plot_light_curve(curve, args.plot, title=f"DiaObject {args.dia_object_id}")
        print(f"plot written to {path}")
    return 0
