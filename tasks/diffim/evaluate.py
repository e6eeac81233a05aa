"""Score DiaSources against a simulated truth: completeness versus S/N and spurious detections.

The simulator (`tasks.simulate`) records, per visit and detector, where every
object was rendered and its flux; the DCR templates hold the static sky
(static and variable stars at their mean flux,
`tasks.simulate.sources.mean_fluxes`).  The change a difference image should
show at a source is its flux minus its template flux; its expected S/N is
that change over the PSF-flux error given the difference image's variance.
A change is found when a DiaSource lies within ``match_radius`` pixels; a
DiaSource is spurious when it lies farther than ``spurious_radius`` from
every source whose flux changed (so it is a residual of a static star, a
defect or noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from tasks.images import Exposure

__all__ = ["DetectionScore", "expected_change_snr", "score_detections"]

SNR_BINS = (5.0, 6.0, 8.0, 12.0, 20.0, np.inf)
"""Edges of the expected-S/N bins of the completeness table."""


@dataclass
class DetectionScore:
    """How DiaSources compare with the truth of one detector.

    Attributes
    ----------
    snr : `numpy.ndarray`
        Expected S/N of each truth source's change (NaN off the image or
        where the difference image has no data).
    found : `numpy.ndarray` of bool
        A DiaSource lies within the match radius of the truth source.
    kind : `numpy.ndarray` of str
        Truth kind (static, variable, transient, sso).
    spurious : `numpy.ndarray` of bool
        Per DiaSource: far from every changing truth source.
    flagged : `numpy.ndarray` of bool
        Per DiaSource: carries one of the pixel flags given to `score_detections`.
    """

    snr: np.ndarray
    found: np.ndarray
    kind: np.ndarray
    spurious: np.ndarray
    flagged: np.ndarray

    @property
    def n_spurious(self) -> int:
        """Number of spurious DiaSources."""
        return int(self.spurious.sum())

    @property
    def n_spurious_unflagged(self) -> int:
        """Number of spurious DiaSources without any of the pixel flags."""
        return int((self.spurious & ~self.flagged).sum())

    def missed(self, min_snr: float) -> np.ndarray:
        """Return the truth sources with expected ``|S/N| >= min_snr`` and no DiaSource."""
        strong = np.abs(np.nan_to_num(self.snr)) >= min_snr
        return np.flatnonzero(strong & ~self.found)

    def completeness(self, edges: tuple[float, ...] = SNR_BINS) -> pd.DataFrame:
        """Return the detected fraction of the changes per bin of expected ``|S/N|``.

        Returns
        -------
        table : `pandas.DataFrame`
            ``lo``, ``hi``, ``n``, ``found``, ``fraction`` per bin.
        """
        snr = np.abs(np.nan_to_num(self.snr))
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            inside = (snr >= lo) & (snr < hi)
            n, k = int(inside.sum()), int((inside & self.found).sum())
            rows.append(
                {"lo": lo, "hi": hi, "n": n, "found": k, "fraction": k / n if n else np.nan}
            )
        return pd.DataFrame(rows)


def expected_change_snr(
    difference: Exposure, x: np.ndarray, y: np.ndarray, change_inst: np.ndarray
) -> np.ndarray:
    """Return the expected S/N of PSF fluxes ``change_inst`` (image units) at ``(x, y)``.

    The error is that of the unweighted PSF fit used by detection,
    ``sqrt(sum(P**2 V)) / sum(P**2)``, with ``V`` the difference variance.
    """
    psf = difference.psf
    snr = np.full(len(x), np.nan)
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        box = psf.stamp_box(xi, yi)
        if not difference.bbox.contains_box(box):
            continue
        p = psf.compute_image(xi, yi)
        var = difference.variance[difference.bbox.slices(box)]
        err = np.sqrt(np.sum(p * p * var)) / np.sum(p * p)
        snr[i] = change_inst[i] / err
    return snr


def score_detections(
    dia_sources: pd.DataFrame,
    difference: Exposure,
    truth_sources: pd.DataFrame,
    template_flux: np.ndarray,
    *,
    match_radius: float = 2.5,
    spurious_radius: float = 3.0,
    flag_columns: tuple[str, ...] = (
        "pixelFlags_saturated",
        "pixelFlags_suspect",
        "pixelFlags_bad",
        "pixelFlags_cr",
    ),
) -> DetectionScore:
    """Compare DiaSources with the truth of one visit and detector.

    Parameters
    ----------
    dia_sources : `pandas.DataFrame`
        Output of `tasks.diffim.DetectAndMeasureTask` (``x``, ``y`` in pixels).
    difference : `tasks.images.Exposure`
        The difference image (PSF, variance and calibration give the expected S/N).
    truth_sources : `pandas.DataFrame`
        The simulator's per-visit truth of this detector (``x``, ``y``, ``flux`` nJy).
    template_flux : `numpy.ndarray`
        Flux (nJy) of each truth source in the template.
    match_radius, spurious_radius : `float`, optional
        Pixels.
    flag_columns : `tuple` of `str`, optional
        DiaSource columns counted as flags in `DetectionScore.flagged`.

    Returns
    -------
    score : `DetectionScore`
    """
    xs = truth_sources["x"].to_numpy(float)
    ys = truth_sources["y"].to_numpy(float)
    change = truth_sources["flux"].to_numpy(float) - np.asarray(template_flux, float)
    calib = difference.photo_calib.calibration_mean if difference.photo_calib else 1.0
    snr = expected_change_snr(difference, xs, ys, change / calib)
    dx = dia_sources["x"].to_numpy(float) if len(dia_sources) else np.zeros(0)
    dy = dia_sources["y"].to_numpy(float) if len(dia_sources) else np.zeros(0)
    found = np.zeros(len(xs), dtype=bool)
    spurious = np.ones(len(dx), dtype=bool)
    if len(dx):
        dist, _ = cKDTree(np.column_stack([dx, dy])).query(np.column_stack([xs, ys]))
        found = dist < match_radius
        changing = np.abs(change) > 0
        if changing.any():
            tree = cKDTree(np.column_stack([xs[changing], ys[changing]]))
            dist, _ = tree.query(np.column_stack([dx, dy]))
            spurious = dist > spurious_radius
    present = [c for c in flag_columns if c in dia_sources.columns]
    flagged = (
        dia_sources[present].to_numpy(bool).any(axis=1) if present else np.zeros(len(dx), bool)
    )
    return DetectionScore(
        snr=snr,
        found=found,
        kind=truth_sources["kind"].to_numpy(),
        spurious=spurious,
        flagged=flagged,
    )
