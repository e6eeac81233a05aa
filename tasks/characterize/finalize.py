"""FinalizeCharacterizationTask: final PSF model and aperture corrections per detector.

Follows Rubin's ``lsst.pipe.tasks.finalizeCharacterization``:
`concat_isolated_star_cats` selects the isolated stars of the band and makes
the deterministic reserve selection, `compute_psf_and_ap_corr_map` fits one
detector (PSF star selection, `fit_pixel_grid_psf`, aperture corrections),
and `run` does every detector of a visit, turning a failed detector into a
row with no PSF and a logged reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.spatial import cKDTree

from tasks.characterize.apcorr import ApCorrMap, measure_aperture_corrections
from tasks.characterize.chebyshev import term_orders
from tasks.characterize.isolated import load_table, select_and_concat
from tasks.characterize.psf_fit import STAMP_MARGIN, fit_pixel_grid_psf
from tasks.characterize.psf_model import PixelGridPsf
from tasks.core.base import NoWorkFound, Struct, Task, TaskConfig, TaskError
from tasks.forcedphot.psf_flux import central_pixel, gather_stamps
from tasks.images import Exposure, bits_from_names

__all__ = ["FinalizeCharacterizationConfig", "FinalizeCharacterizationTask"]


class FinalizeCharacterizationConfig(TaskConfig):
    """Configuration of `FinalizeCharacterizationTask`."""

    reserveFraction: float = Field(
        default=0.1, description="Fraction of isolated stars reserved (per band and tract)."
    )
    matchRadius: float = Field(
        default=1.5, description="Radius (pixels) matching src rows to isolated sources."
    )
    minSn: float = Field(default=20.0, description="Minimum S/N of a PSF candidate.")
    maxSn: float = Field(default=1.0e5, description="Maximum S/N of a PSF candidate.")
    snColumn: str = Field(default="snr", description="src column holding the S/N, if present.")
    fluxColumn: str = Field(
        default="psfFlux", description="src flux column used for the S/N when snColumn is absent."
    )
    fluxErrColumn: str = Field(default="psfFluxErr", description="Error of fluxColumn.")
    badFlags: list[str] = Field(
        default=["pixelFlags_saturated", "pixelFlags_bad", "pixelFlags_edge", "isDipole"],
        description="Boolean src columns that exclude a candidate (ignored when absent).",
    )
    badMaskPlanes: list[str] = Field(
        default=["BAD", "SAT", "NO_DATA", "CR", "EDGE", "INTRP", "SUSPECT"],
        description="Mask planes of bad pixels (excluded from PSF stars, apertures, fits).",
    )
    maxBadPixelFraction: float = Field(
        default=0.05,
        description="Most bad pixels (fraction of the stamp) of a PSF star; its bad pixels "
        "are replaced by the model during the fit.",
    )
    maxPsfStars: int = Field(default=300, description="Most stars used in the PSF fit.")
    minPsfStars: int = Field(default=6, description="Fewest stars accepted for a PSF fit.")
    kernelSize: int = Field(default=25, description="Side (odd) of the pixel-grid PSF model.")
    spatialOrder: int = Field(default=2, description="Polynomial order of the PSF variation.")
    minStarsPerTerm: float = Field(
        default=3.0,
        description="Stars needed per polynomial term; with fewer stars the PSF and "
        "aperture-correction orders are lowered (down to a constant).",
    )
    nIter: int = Field(default=3, description="PSF outlier-rejection iterations.")
    clipSigma: float = Field(default=4.0, description="PSF outlier threshold (robust sigma).")
    apertureRadius: float = Field(
        default=12.0, description="Radius (pixels) of the reference aperture flux."
    )
    apCorrOrder: int = Field(default=2, description="Chebyshev order of the aperture correction.")
    apCorrMinSn: float = Field(default=20.0, description="Minimum S/N of an aperture-corr star.")
    apCorrClipSigma: float = Field(default=3.0, description="Aperture-correction clip threshold.")
    apCorrNIter: int = Field(default=3, description="Aperture-correction clipping iterations.")


# failures of one detector that must not stop the visit (bad inputs, unreadable files,
# degenerate fits); anything else is a bug and propagates
_DETECTOR_ERRORS = (TaskError, OSError, KeyError, ValueError, np.linalg.LinAlgError)


def _affordable_order(order: int, n_stars: int, per_term: float) -> int:
    """Highest order <= ``order`` with at least ``per_term`` stars per polynomial term."""
    while order > 0 and n_stars < per_term * len(term_orders(order)):
        order -= 1
    return order


class FinalizeCharacterizationTask(Task):
    """Fit the final PSF model and aperture-correction map of each detector."""

    ConfigClass = FinalizeCharacterizationConfig
    _DefaultName = "finalizeCharacterization"
    config: FinalizeCharacterizationConfig

    def concat_isolated_star_cats(
        self,
        band: str,
        isolated_star_cat_dict: Mapping[int, Any],
        isolated_star_source_dict: Mapping[int, Any],
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Concatenate isolated-star catalogs and make the reserve selection.

        Parameters
        ----------
        band : `str`
            Band of the visit.
        isolated_star_cat_dict, isolated_star_source_dict : `dict`
            Per-tract tables (DataFrames, Parquet paths or handles with ``get()``).

        Returns
        -------
        isolated_table : `pandas.DataFrame`
            Stars seen in the band, with ``tract`` and ``reserved``.
        isolated_source_table : `pandas.DataFrame`
            Their sources, ``obj_index`` into ``isolated_table``, ``reserved``.
        """
        stars = {int(t): load_table(h) for t, h in isolated_star_cat_dict.items()}
        sources = {int(t): load_table(h) for t, h in isolated_star_source_dict.items()}
        return select_and_concat(band, stars, sources, self.config.reserveFraction)

    # -- one detector ------------------------------------------------------
    def _source_sn(self, src: pd.DataFrame) -> np.ndarray:
        cfg = self.config
        if cfg.snColumn in src.columns:
            return src[cfg.snColumn].to_numpy(dtype=np.float64)
        if cfg.fluxColumn in src.columns and cfg.fluxErrColumn in src.columns:
            with np.errstate(divide="ignore", invalid="ignore"):
                return src[cfg.fluxColumn].to_numpy(float) / src[cfg.fluxErrColumn].to_numpy(float)
        raise TaskError(
            f"src needs a {cfg.snColumn!r} column or {cfg.fluxColumn!r}/{cfg.fluxErrColumn!r}"
        )

    def _match_isolated(
        self, visit: int, detector: int, exposure: Exposure, src: pd.DataFrame, iso: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray]:
        """Match src rows to isolated sources; return (matched, reserved) masks."""
        n = len(src)
        if len(iso) == 0 or n == 0:
            return np.zeros(n, bool), np.zeros(n, bool)
        sel = np.ones(len(iso), dtype=bool)
        if "visit" in iso.columns:
            sel &= iso["visit"].to_numpy() == visit
        if "detector" in iso.columns:
            sel &= iso["detector"].to_numpy() == detector
        iso = iso[sel]
        if len(iso) == 0:
            return np.zeros(n, bool), np.zeros(n, bool)
        if "x" in iso.columns and "y" in iso.columns:
            ix, iy = iso["x"].to_numpy(float), iso["y"].to_numpy(float)
        elif "ra" in iso.columns and "dec" in iso.columns:
            ix, iy = exposure.sky_to_pixel(iso["ra"].to_numpy(float), iso["dec"].to_numpy(float))
        else:
            raise TaskError("isolated sources need x, y or ra, dec columns")
        ok = np.isfinite(ix) & np.isfinite(iy)
        tree = cKDTree(np.column_stack([ix[ok], iy[ok]]))
        sx, sy = src["x"].to_numpy(float), src["y"].to_numpy(float)
        finite = np.isfinite(sx) & np.isfinite(sy)
        dist, idx = tree.query(
            np.column_stack([np.where(finite, sx, 0.0), np.where(finite, sy, 0.0)]),
            distance_upper_bound=self.config.matchRadius,
        )
        matched = finite & np.isfinite(dist)
        reserved = np.zeros(n, dtype=bool)
        res_col = iso["reserved"].to_numpy(bool)[ok]
        reserved[matched] = res_col[idx[matched]]
        return matched, reserved

    def _stamp_flags(self, exposure: Exposure, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Stars whose PSF stamp (grown by the shift margin) cannot be used.

        Off the image, a bad pixel within 3 pixels of the centre, or more than
        ``maxBadPixelFraction`` bad pixels (fewer are patched by the PSF fit).
        """
        half = self.config.kernelSize // 2 + STAMP_MARGIN
        origin = (exposure.bbox.x0, exposure.bbox.y0)
        msk, inside = gather_stamps(exposure.mask, origin, central_pixel(x), central_pixel(y), half)
        bad = (msk & bits_from_names(self.config.badMaskPlanes)) != 0
        core = slice(half - 3, half + 4)
        too_many = bad.mean(axis=(1, 2)) > self.config.maxBadPixelFraction
        return (
            ~inside.all(axis=(1, 2))
            | bad[:, core, core].any(axis=(1, 2))
            | too_many
            | ~(np.isfinite(x) & np.isfinite(y))
        )

    def compute_psf_and_ap_corr_map(
        self,
        visit: int,
        detector: int,
        exposure: Exposure,
        src: pd.DataFrame,
        isolated_source_table: pd.DataFrame,
    ) -> tuple[PixelGridPsf, ApCorrMap, pd.DataFrame]:
        """Compute the PSF model and aperture-correction map of one exposure.

        Parameters
        ----------
        visit, detector : `int`
            Ids (for logging and selecting isolated sources).
        exposure : `tasks.images.Exposure`
            Background-subtracted science exposure.
        src : `pandas.DataFrame`
            Single-frame sources with ``x``, ``y`` and an S/N (see config).
        isolated_source_table : `pandas.DataFrame`
            From `concat_isolated_star_cats`.

        Returns
        -------
        psf : `PixelGridPsf`
        ap_corr_map : `ApCorrMap`
        measured_src : `pandas.DataFrame`
            ``src`` with ``calib_psf_candidate``, ``calib_psf_used``,
            ``calib_psf_reserved``, ``calib_psf_chi2``, ``base_PsfFlux_instFlux[Err]``,
            ``apFlux_instFlux[Err]``, ``base_PsfFlux_apCorr``, ``apcorr_used``.

        Raises
        ------
        TaskError
            On unusable input or too few stars (`PsfFitError`).
        """
        cfg = self.config
        for column in ("x", "y"):
            if column not in src.columns:
                raise TaskError(f"src of visit {visit} detector {detector} lacks {column!r}")
        x = src["x"].to_numpy(dtype=np.float64)
        y = src["y"].to_numpy(dtype=np.float64)
        sn = self._source_sn(src)
        flagged = self._stamp_flags(exposure, x, y)
        for flag in cfg.badFlags:
            if flag in src.columns:
                flagged |= src[flag].to_numpy(dtype=bool)
        matched, reserved = self._match_isolated(
            visit, detector, exposure, src, isolated_source_table
        )
        candidate = matched & ~flagged & (sn >= cfg.minSn) & (sn <= cfg.maxSn)
        reserved_cand = candidate & reserved
        fit_cand = candidate & ~reserved
        idx = np.flatnonzero(fit_cand)
        if idx.size > cfg.maxPsfStars:
            rng = np.random.default_rng(int(visit) * 1000 + int(detector))
            idx = np.sort(rng.choice(idx, cfg.maxPsfStars, replace=False))
        self.log.info(
            "visit %d detector %d: %d candidates (%d reserved), fitting %d",
            visit,
            detector,
            int(candidate.sum()),
            int(reserved_cand.sum()),
            idx.size,
        )
        order = _affordable_order(cfg.spatialOrder, idx.size, cfg.minStarsPerTerm)
        bbox = exposure.bbox
        domain = (bbox.x0 - 0.5, bbox.y0 - 0.5, bbox.x1 + 0.5, bbox.y1 + 0.5)
        origin = (bbox.x0, bbox.y0)
        with self.timer("psfFit"):
            fit = fit_pixel_grid_psf(
                exposure.image, exposure.variance, exposure.mask, origin, x[idx], y[idx], domain,
                kernel_size=cfg.kernelSize, order=order,
                bad_mask=bits_from_names(cfg.badMaskPlanes), min_stars=cfg.minPsfStars,
                n_iter=cfg.nIter, clip_sigma=cfg.clipSigma,
                max_bad_fraction=cfg.maxBadPixelFraction,
            )  # fmt: skip
        used = np.zeros(len(src), dtype=bool)
        used[idx] = fit.used
        chi2 = np.full(len(src), np.nan)
        chi2[idx] = fit.chi2
        ap_idx = np.flatnonzero(candidate & ~reserved & (sn >= cfg.apCorrMinSn))
        ap_order = _affordable_order(cfg.apCorrOrder, ap_idx.size, cfg.minStarsPerTerm)
        with self.timer("apCorr"):
            meas = measure_aperture_corrections(
                exposure.image, exposure.variance, exposure.mask, origin, x[ap_idx], y[ap_idx],
                fit.psf, domain, radius=cfg.apertureRadius, order=ap_order,
                bad_mask=bits_from_names(cfg.badMaskPlanes), min_sn=cfg.apCorrMinSn,
                n_sigma=cfg.apCorrClipSigma, n_iter=cfg.apCorrNIter,
            )  # fmt: skip
        out = src.copy()
        out["calib_psf_candidate"] = candidate
        out["calib_psf_used"] = used
        out["calib_psf_reserved"] = reserved_cand
        out["calib_psf_chi2"] = chi2
        for name, values in (
            ("base_PsfFlux_instFlux", meas.psf_flux),
            ("base_PsfFlux_instFluxErr", meas.psf_flux_err),
            ("apFlux_instFlux", meas.ap_flux),
            ("apFlux_instFluxErr", meas.ap_flux_err),
        ):
            column = np.full(len(src), np.nan)
            column[ap_idx] = values
            out[name] = column
        out["base_PsfFlux_apCorr"] = meas.ap_corr_map.evaluate(x, y)
        apcorr_used = np.zeros(len(src), dtype=bool)
        apcorr_used[ap_idx] = meas.used
        out["apcorr_used"] = apcorr_used
        out["visit"] = int(visit)
        out["detector"] = int(detector)
        self.metadata[f"det{detector}_psfOrder"] = order
        self.metadata[f"det{detector}_apCorrOrder"] = ap_order
        self.metadata[f"det{detector}_nPsfUsed"] = int(used.sum())
        self.metadata[f"det{detector}_nApCorrUsed"] = int(apcorr_used.sum())
        return fit.psf, meas.ap_corr_map, out

    # -- a visit -----------------------------------------------------------
    def run(
        self,
        visit: int,
        band: str,
        isolated_star_cat_dict: Mapping[int, Any],
        isolated_star_source_dict: Mapping[int, Any],
        src_dict: Mapping[int, Any],
        calexp_dict: Mapping[int, Any],
    ) -> Struct:
        """Run the final characterization on every detector of a visit.

        Parameters
        ----------
        visit : `int`
            Visit id.
        band : `str`
            Band of the visit (selects stars and reserve lists).
        isolated_star_cat_dict, isolated_star_source_dict : `dict`
            Per-tract isolated-star tables or handles.
        src_dict : `dict` [`int`, `pandas.DataFrame`]
            Per-detector single-frame source tables (or handles).
        calexp_dict : `dict` [`int`, `tasks.images.Exposure`]
            Per-detector calibrated exposures (or handles with ``get()``).

        Returns
        -------
        result : `Struct`
            ``psf_ap_corr_cat``: one row per detector (``visit``,
            ``detector``, ``band``, ``psf_ok``, ``n_candidates``, ``n_used``,
            ``n_reserved``, ``reason``); ``psfs`` and ``ap_corr_maps``: dicts
            by detector (successful ones only); ``output_table``: the measured
            sources of all successful detectors.

        Raises
        ------
        NoWorkFound
            If no isolated source exists in the band.
        """
        isolated_table, isolated_source_table = self.concat_isolated_star_cats(
            band, isolated_star_cat_dict, isolated_star_source_dict
        )
        if len(isolated_source_table) == 0:
            raise NoWorkFound(f"no isolated star sources in band {band!r} for visit {visit}")
        rows, psfs, maps, tables = [], {}, {}, []
        for detector in sorted(calexp_dict):
            row: dict[str, Any] = {"visit": int(visit), "detector": int(detector), "band": band}
            try:
                exposure = calexp_dict[detector]
                if not isinstance(exposure, Exposure):
                    exposure = exposure.get()
                if detector not in src_dict:
                    raise TaskError("no src table for this detector")
                src = load_table(src_dict[detector])
                psf, ap_corr_map, measured = self.compute_psf_and_ap_corr_map(
                    visit, detector, exposure, src, isolated_source_table
                )
            except _DETECTOR_ERRORS as exc:
                self.log.warning("visit %d detector %d: no final PSF: %s", visit, detector, exc)
                row.update(psf_ok=False, n_candidates=0, n_used=0, n_reserved=0, reason=str(exc))
            else:
                psfs[detector] = psf
                maps[detector] = ap_corr_map
                tables.append(measured)
                row.update(
                    psf_ok=True,
                    n_candidates=int(measured["calib_psf_candidate"].sum()),
                    n_used=int(measured["calib_psf_used"].sum()),
                    n_reserved=int(measured["calib_psf_reserved"].sum()),
                    reason="",
                )
            rows.append(row)
        output = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return Struct(
            psf_ap_corr_cat=pd.DataFrame(rows),
            psfs=psfs,
            ap_corr_maps=maps,
            output_table=output,
            isolated_table=isolated_table,
        )

    def runQuantum(
        self, layout: Any, visit: int, src_dict: Mapping[int, Any], write: bool = True
    ) -> Struct:
        """Run on one visit of a data layout and write the outputs there.

        The data-layout form of Rubin's ``runQuantum``: the calibrated
        exposures of the detectors in ``src_dict`` and every tract's
        isolated-star tables are read from ``layout``
        (`tasks.data.layout.DataLayout`), `run` is called, and the outputs are
        written with `tasks.characterize.persist.write_final_characterization`.

        Parameters
        ----------
        layout : `tasks.data.layout.DataLayout`
            The data directory.
        visit : `int`
            Visit id.
        src_dict : `dict` [`int`, `pandas.DataFrame`]
            Single-frame source table per detector (from detection).
        write : `bool`, optional
            Whether to write the outputs.

        Returns
        -------
        result : `Struct`
            As `run`, plus ``paths`` (files written).
        """
        from tasks.characterize.persist import write_final_characterization

        band = layout.read_visit_info(visit).band
        tracts = layout.isolated_star_tracts()
        cats = {t: layout.isolated_star_cat_path(t) for t in tracts}
        sources = {t: layout.isolated_star_sources_path(t) for t in tracts}
        calexps = {d: _LazyExposure(layout, visit, d) for d in src_dict}
        result = self.run(visit, band, cats, sources, src_dict, calexps)
        result.paths = write_final_characterization(layout, visit, result) if write else []
        return result


class _LazyExposure:
    """A handle reading one exposure of a data layout when ``get()`` is called."""

    def __init__(self, layout: Any, visit: int, detector: int) -> None:
        self.layout, self.visit, self.detector = layout, visit, detector

    def get(self) -> Exposure:
        return self.layout.read_exposure(self.visit, self.detector)
