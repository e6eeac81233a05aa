"""ForcedPhotCcdFromDataFrameTask: PSF photometry at DiaObject positions.

Follows Rubin's ``lsst.meas.base.ForcedPhotCcdFromDataFrameTask``:
`df2RefCat` concatenates DiaObject frames and keeps those on the exposure,
`df2SourceCat` builds the measurement catalog, `attachFootprints` places the
PSF footprints on the measured image, and `run` measures one exposure.
`measure_dia_objects` is the per-visit entry point of the DiaPipeline: it
measures the difference image (``psfFlux``) and the science image
(``scienceFlux``) and returns DiaForcedSource rows in the APDB schema.

The measurement is the unweighted PSF fit of `tasks.forcedphot.psf_flux`
(DESIGN.md section 3), vectorised over sources; the aperture correction of
the exposure (or the one given) is applied where finite and positive and the
fluxes are calibrated to nJy with the exposure's `PhotoCalib`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from astropy.time import Time
from pydantic import Field

from tasks.core.base import Struct, Task, TaskConfig, TaskError
from tasks.core.ids import make_ids
from tasks.forcedphot.psf_flux import measure_psf_flux, psf_images_at
from tasks.images import Exposure, ImageError, bits_from_names

__all__ = [
    "ForcedPhotCcdFromDataFrameConfig",
    "ForcedPhotCcdFromDataFrameTask",
    "ForcedPhotError",
]

PSF_FLUX_FIELD = "base_PsfFlux_instFlux"  # Rubin's name of the corrected quantity
_DIA_FORCED_SOURCE_COLUMNS = [
    "diaForcedSourceId",
    "diaObjectId",
    "ra",
    "dec",
    "visit",
    "detector",
    "band",
    "midpointMjdTai",
    "psfFlux",
    "psfFluxErr",
    "scienceFlux",
    "scienceFluxErr",
    "timeProcessedMjdTai",
]


class ForcedPhotError(TaskError):
    """Invalid input to forced photometry (missing columns, bad types, no PSF...)."""


class ForcedPhotCcdFromDataFrameConfig(TaskConfig):
    """Configuration of `ForcedPhotCcdFromDataFrameTask`."""

    badMaskPlanes: list[str] = Field(
        default=["BAD", "SAT", "NO_DATA", "CR"],
        description="Mask planes whose pixels are left out of the PSF fit.",
    )
    doApplyApCorr: bool = Field(
        default=True,
        description="Multiply PSF fluxes by the aperture correction where it is finite and > 0.",
    )
    apCorrName: str = Field(
        default=PSF_FLUX_FIELD,
        description="Name of the aperture-correction field applied to PSF fluxes.",
    )


class ForcedPhotCcdFromDataFrameTask(Task):
    """Forced PSF photometry of DiaObjects on one detector's images."""

    ConfigClass = ForcedPhotCcdFromDataFrameConfig
    _DefaultName = "forcedPhotCcdFromDataFrame"
    config: ForcedPhotCcdFromDataFrameConfig

    # -- reference catalog -------------------------------------------------
    def df2SourceCat(self, df: pd.DataFrame) -> pd.DataFrame:
        """Build the minimal measurement catalog (``diaObjectId, ra, dec``).

        Parameters
        ----------
        df : `pandas.DataFrame`
            DiaObjects with ``diaObjectId``, ``ra``, ``dec`` (degrees).

        Returns
        -------
        sources : `pandas.DataFrame`
            Copy with int64 ids and float64 coordinates, default index.

        Raises
        ------
        ForcedPhotError
            If a column is missing or not numeric.
        """
        missing = [c for c in ("diaObjectId", "ra", "dec") if c not in df.columns]
        if missing:
            raise ForcedPhotError(f"DiaObject frame lacks columns {missing}")
        try:
            ids = df["diaObjectId"].to_numpy(dtype=np.int64)
            ra = df["ra"].to_numpy(dtype=np.float64)
            dec = df["dec"].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ForcedPhotError(f"DiaObject ids/coordinates are not numeric: {exc}") from exc
        return pd.DataFrame({"diaObjectId": ids, "ra": ra, "dec": dec})

    def df2RefCat(
        self, dfList: Sequence[pd.DataFrame], exposureBBox: Any, exposureWcs: Any
    ) -> pd.DataFrame:
        """Concatenate DiaObject frames and keep those that fall on the exposure.

        Parameters
        ----------
        dfList : `list` [`pandas.DataFrame`]
            Frames with ``diaObjectId``, ``ra``, ``dec`` (e.g. one per patch).
        exposureBBox : `tasks.images.Box2I`
            Box of the exposure (parent pixels).
        exposureWcs : `astropy.wcs.WCS`
            Parent-pixel WCS of the exposure.

        Returns
        -------
        refCat : `pandas.DataFrame`
            ``diaObjectId, ra, dec, x, y`` of unique objects whose pixel
            position is inside the box (``x0 - 0.5 <= x < x1 + 0.5``); rows
            with non-finite coordinates are dropped with a warning.
        """
        frames = [self.df2SourceCat(df) for df in dfList]
        if not frames:
            return pd.DataFrame(
                {
                    "diaObjectId": np.empty(0, np.int64),
                    "ra": np.empty(0),
                    "dec": np.empty(0),
                    "x": np.empty(0),
                    "y": np.empty(0),
                }
            )
        cat = pd.concat(frames, ignore_index=True)
        cat = cat.drop_duplicates(subset="diaObjectId", keep="first", ignore_index=True)
        finite = np.isfinite(cat["ra"].to_numpy()) & np.isfinite(cat["dec"].to_numpy())
        if not finite.all():
            self.log.warning("dropping %d DiaObjects with non-finite ra/dec", int((~finite).sum()))
            cat = cat[finite].reset_index(drop=True)
        x, y = _sky_to_pixel(exposureWcs, cat["ra"].to_numpy(), cat["dec"].to_numpy())
        inside = np.asarray(exposureBBox.contains(x, y), dtype=bool) & np.isfinite(x)
        cat["x"] = x
        cat["y"] = y
        return cat[inside].reset_index(drop=True)

    def mergeAndFilterReferences(
        self, exposure: Exposure, refCats: Sequence[pd.DataFrame], refWcs: Any = None
    ) -> pd.DataFrame:
        """Merge reference frames and keep the objects on ``exposure``.

        ``refWcs`` is accepted for the Rubin signature; positions are
        computed with the exposure's own WCS.
        """
        return self.df2RefCat(list(refCats), exposure.bbox, exposure.wcs)

    def attachFootprints(
        self, sources: pd.DataFrame, refCat: pd.DataFrame, exposure: Exposure, refWcs: Any = None
    ) -> pd.DataFrame:
        """Place each source's PSF footprint on ``exposure``.

        Adds ``x, y`` (pixel position on the measured image, from its WCS)
        and ``footprint_x0, footprint_y0, footprint_size`` (the box of the
        PSF image used as the measurement footprint).
        """
        if exposure.psf is None:
            raise ForcedPhotError("the exposure has no PSF: forced photometry needs one")
        out = sources.copy()
        x, y = _sky_to_pixel(exposure.wcs, refCat["ra"].to_numpy(), refCat["dec"].to_numpy())
        half = exposure.psf.kernel_size // 2
        out["x"] = x
        out["y"] = y
        out["footprint_x0"] = np.floor(x + 0.5) - half
        out["footprint_y0"] = np.floor(y + 0.5) - half
        out["footprint_size"] = 2 * half + 1
        return out

    # -- measurement -------------------------------------------------------
    def _bad_mask(self) -> int:
        try:
            return bits_from_names(self.config.badMaskPlanes)
        except ImageError as err:
            raise ForcedPhotError(str(err)) from None

    def run(
        self,
        measCat: pd.DataFrame,
        exposure: Exposure,
        refCat: pd.DataFrame,
        refWcs: Any = None,
        exposureId: int | None = None,
        ap_corr_map: Any = None,
        psf_images: np.ndarray | None = None,
    ) -> Struct:
        """Measure forced PSF fluxes on one exposure.

        Parameters
        ----------
        measCat : `pandas.DataFrame`
            Catalog from `df2SourceCat` (rows aligned with ``refCat``).
        exposure : `tasks.images.Exposure`
            Image to measure, with a PSF (and a photometric calibration for nJy).
        refCat : `pandas.DataFrame`
            Reference positions (``ra``, ``dec``).
        refWcs : optional
            Unused (positions come from the exposure's WCS).
        exposureId : `int`, optional
            Unused; kept for the Rubin signature.
        ap_corr_map : optional
            Aperture-correction map (``evaluate(x, y[, name])``); defaults to
            ``exposure.ap_corr_map``.
        psf_images : `numpy.ndarray`, optional
            Precomputed PSF images at the positions (shared between images).

        Returns
        -------
        result : `Struct`
            ``measCat``: the catalog with ``x, y``, instrumental
            ``base_PsfFlux_instFlux[Err]``, ``base_PsfFlux_apCorr``, calibrated
            ``psfFlux, psfFluxErr`` (nJy) and the flags
            ``base_PsfFlux_flag[_edge, _noGoodPixels, _nan]``;
            ``psf_images``: the PSF images used.
        """
        with self.timer("forcedPhot"):
            cat = self.attachFootprints(measCat, refCat, exposure, refWcs)
            x = cat["x"].to_numpy()
            y = cat["y"].to_numpy()
            if psf_images is None:
                psf_images = psf_images_at(exposure.psf, x, y)
            res = measure_psf_flux(
                exposure.image,
                exposure.variance,
                exposure.mask,
                (exposure.bbox.x0, exposure.bbox.y0),
                x,
                y,
                psf_images,
                self._bad_mask(),
            )
            flux, flux_err = res.flux, res.flux_err
            ap_corr = np.ones_like(flux)
            if ap_corr_map is None:
                ap_corr_map = exposure.ap_corr_map
            if self.config.doApplyApCorr and ap_corr_map is not None and x.size:
                ap_corr = np.asarray(_evaluate_ap_corr(ap_corr_map, x, y, self.config.apCorrName))
                ok = np.isfinite(ap_corr) & (ap_corr > 0)
                ap_corr = np.where(ok, ap_corr, 1.0)
                if not ok.all():
                    self.log.warning("aperture correction not usable at %d positions", (~ok).sum())
                flux = flux * ap_corr
                flux_err = flux_err * ap_corr
            cat["base_PsfFlux_instFlux"] = flux
            cat["base_PsfFlux_instFluxErr"] = flux_err
            cat["base_PsfFlux_apCorr"] = ap_corr
            cat["base_PsfFlux_flag"] = res.flag
            cat["base_PsfFlux_flag_edge"] = res.flag_edge
            cat["base_PsfFlux_flag_noGoodPixels"] = res.flag_no_good_pixels
            cat["base_PsfFlux_flag_nan"] = res.flag_nan
            if exposure.photo_calib is not None:
                cal, cal_err = exposure.photo_calib.instflux_to_nanojansky(flux, flux_err)
            else:
                self.log.warning("exposure has no photometric calibration: fluxes stay in counts")
                cal, cal_err = flux, flux_err
            cat["psfFlux"] = np.asarray(cal, dtype=np.float64)
            cat["psfFluxErr"] = np.asarray(cal_err, dtype=np.float64)
        return Struct(measCat=cat, psf_images=psf_images)

    def measure_dia_objects(
        self,
        dia_objects: pd.DataFrame | Sequence[pd.DataFrame],
        exposure: Exposure,
        diffim: Exposure,
        ap_corr_map: Any = None,
    ) -> pd.DataFrame:
        """Measure DiaObjects on the difference and science images (forced PSF fluxes).

        Parameters
        ----------
        dia_objects : `pandas.DataFrame` or `list` of them
            DiaObjects (``diaObjectId``, ``ra``, ``dec``).
        exposure : `tasks.images.Exposure`
            Science exposure (gives ``scienceFlux``; its visit info, detector
            and band label the rows).
        diffim : `tasks.images.Exposure`
            Difference image (gives ``psfFlux``); uses its own PSF, or the
            science PSF when it has none.
        ap_corr_map : optional
            Aperture-correction map; defaults to ``exposure.ap_corr_map``.

        Returns
        -------
        dia_forced_sources : `pandas.DataFrame`
            One row per DiaObject on the detector, APDB DiaForcedSource
            columns (``diaForcedSourceId`` from `tasks.core.ids.make_ids`).
        """
        frames = [dia_objects] if isinstance(dia_objects, pd.DataFrame) else list(dia_objects)
        if exposure.visit_info is None or exposure.detector is None:
            raise ForcedPhotError("the science exposure needs visit_info and detector")
        if exposure.psf is None:
            raise ForcedPhotError("the science exposure has no PSF")
        if diffim.psf is None:
            diffim = _with_psf(diffim, exposure.psf)
        if ap_corr_map is None:
            ap_corr_map = exposure.ap_corr_map
        with self.timer("measureDiaObjects"):
            ref = self.df2RefCat(frames, exposure.bbox, exposure.wcs)
            meas = self.df2SourceCat(ref)
            sci_result = self.run(meas, exposure, ref, ap_corr_map=ap_corr_map)
            sci = sci_result.measCat
            # the PSF images depend only on the PSF and the pixel positions
            shared = None
            if diffim.psf is exposure.psf and _same_wcs(diffim, exposure):
                shared = sci_result.psf_images
            dif = self.run(meas, diffim, ref, ap_corr_map=ap_corr_map, psf_images=shared).measCat
        visit_info = exposure.visit_info
        n = len(ref)
        out = pd.DataFrame(
            {
                "diaForcedSourceId": make_ids(visit_info.visit_id, exposure.detector, n),
                "diaObjectId": ref["diaObjectId"].to_numpy(np.int64),
                "ra": ref["ra"].to_numpy(np.float64),
                "dec": ref["dec"].to_numpy(np.float64),
                "visit": np.full(n, visit_info.visit_id, dtype=np.int64),
                "detector": np.full(n, exposure.detector, dtype=np.int16),
                "band": np.full(n, exposure.band, dtype=object),
                "midpointMjdTai": np.full(n, visit_info.midpoint_mjd_tai),
                "psfFlux": dif["psfFlux"].to_numpy(),
                "psfFluxErr": dif["psfFluxErr"].to_numpy(),
                "scienceFlux": sci["psfFlux"].to_numpy(),
                "scienceFluxErr": sci["psfFluxErr"].to_numpy(),
                "timeProcessedMjdTai": np.full(n, Time.now().tai.mjd),
            }
        )
        self.metadata["numDiaForcedSources"] = n
        self.metadata["numFlaggedDiffim"] = int(dif["base_PsfFlux_flag"].sum())
        return out[_DIA_FORCED_SOURCE_COLUMNS]


def _sky_to_pixel(wcs: Any, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parent pixel positions of sky coordinates (an empty input gives empty arrays)."""
    if wcs is None:
        raise ForcedPhotError("the exposure has no WCS")
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    if wcs.sip is not None:
        x, y = wcs.all_world2pix(ra, dec, 0)
    else:
        x, y = wcs.wcs_world2pix(ra, dec, 0)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _evaluate_ap_corr(ap_corr_map: Any, x: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """Evaluate a map that may or may not take a field name."""
    try:
        return ap_corr_map.evaluate(x, y, name)
    except TypeError:
        return ap_corr_map.evaluate(x, y)


def _same_wcs(a: Exposure, b: Exposure) -> bool:
    return a.wcs is b.wcs or (
        a.wcs is not None and b.wcs is not None and a.wcs.wcs.compare(b.wcs.wcs)
    )


def _with_psf(exposure: Exposure, psf: Any) -> Exposure:
    """Return a shallow copy of ``exposure`` carrying ``psf``."""
    out = Exposure.__new__(Exposure)
    out.__dict__.update(exposure.__dict__)
    out.psf = psf
    return out
