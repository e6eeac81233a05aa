"""Detection and measurement on any exposure: DiaSources or a single-frame ``src`` table.

`DetectAndMeasureTask.run(exposure, science=None, ...)` correlates the
exposure with its PSF, finds positive and negative footprints above the
threshold (5 sigma by default) and their peaks (`tasks.diffim.peaks`),
centroids them, fits PSF fluxes at the centroids (`tasks.diffim.measure`),
flags pixels, and pairs a positive and a negative peak closer than
``dipoleRadius`` PSF widths into one dipole source (``isDipole``).

On a difference image (pass the ``science`` exposure) the rows use the APDB
``DiaSource`` column names (Contract E): ``diaSourceId`` from
`tasks.ids.make_ids`, ``psfFlux``/``psfFluxErr`` on the difference and
``scienceFlux``/``scienceFluxErr`` on the science image, in nJy.  On a
science image (``science=None``) the same columns form the ``src`` table
that the final characterization reads (``x``, ``y``, ``snr``, ``psfFlux``,
flags).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.time import Time
from pydantic import Field
from scipy import signal
from scipy.spatial import cKDTree

from tasks.base import Struct, Task, TaskConfig, TaskError
from tasks.diffim.measure import (
    extract_stamps,
    mask_bits_near,
    psf_fluxes,
    psf_model_stamps,
    subtract_psf_models,
)
from tasks.diffim.peaks import FilteredImage, Peaks, filter_image, find_peaks, refine_centroids
from tasks.diffim.pixel_loops import add_stamps
from tasks.ids import make_ids
from tasks.images import Exposure, MaskPlane

__all__ = ["DetectAndMeasureConfig", "DetectAndMeasureTask", "PIXEL_FLAGS"]

PIXEL_FLAGS = {
    "pixelFlags_bad": MaskPlane.BAD,
    "pixelFlags_cr": MaskPlane.CR,
    "pixelFlags_edge": MaskPlane.EDGE | MaskPlane.NO_DATA,
    "pixelFlags_nodata": MaskPlane.NO_DATA,
    "pixelFlags_interpolated": MaskPlane.INTRP,
    "pixelFlags_saturated": MaskPlane.SAT,
    "pixelFlags_suspect": MaskPlane.SUSPECT,
}
"""Footprint pixel flags (DiaSource columns) and the mask planes that set them."""

_CENTER_FLAGS = {
    "pixelFlags_crCenter": MaskPlane.CR,
    "pixelFlags_nodataCenter": MaskPlane.NO_DATA,
    "pixelFlags_interpolatedCenter": MaskPlane.INTRP,
    "pixelFlags_saturatedCenter": MaskPlane.SAT,
    "pixelFlags_suspectCenter": MaskPlane.SUSPECT,
}


def _filtered_without_models(
    first: FilteredImage,
    psf_images,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
) -> np.ndarray:
    """PSF-filtered image of the image minus PSF models of sources.

    By linearity this is the filtered image minus the filtered models, and
    the models are small: each (with its unusable pixels zeroed, as the
    filter does) is correlated with the filter kernel on its own and
    subtracted from a copy of ``first.filtered``.
    """
    out = first.filtered.copy()
    stamps, x0, y0 = psf_model_stamps(psf_images, x, y, flux)
    if not len(stamps):
        return out
    k = stamps.shape[-1]
    usable = extract_stamps(~first.unusable, x0 + k // 2, y0 + k // 2, k, fill=False)
    stamps = np.where(usable, stamps, 0.0)
    flipped = first.kernel[::-1, ::-1]
    filtered = signal.fftconvolve(stamps, flipped[None], mode="full", axes=(1, 2))
    half = flipped.shape[0] // 2
    add_stamps(out, filtered.astype(np.float32), x0 - half, y0 - half, np.float32(-1.0))
    return out


class DetectAndMeasureConfig(TaskConfig):
    """Configuration of `DetectAndMeasureTask`."""

    threshold: float = Field(
        5.0, gt=0, description="Detection threshold, sigma of the PSF-filtered image."
    )
    polarity: str = Field(
        "both", pattern="^(both|positive|negative)$", description="Footprint signs to detect."
    )
    minPeakSeparation: float = Field(
        1.0, gt=0, description="A peak is the maximum within this many PSF sigmas."
    )
    footprintGrow: float = Field(
        1.0, ge=0, description="Footprint boxes are grown by this many PSF sigmas."
    )
    dipoleRadius: float = Field(
        4.0, ge=0, description="Opposite peaks closer than this (PSF sigmas) form a dipole."
    )
    filterRadius: float = Field(
        3.0, gt=0, description="Radius (PSF sigmas) of the PSF kernel used as matched filter."
    )
    nPasses: int = Field(
        2,
        ge=1,
        le=2,
        description="Detection passes (the second runs on the image minus "
        "the PSF models of the first pass's sources, finding faint neighbours of bright ones).",
    )
    unusableMaskPlanes: list[str] = Field(
        ["NO_DATA", "BAD", "CR", "SAT"], description="Mask planes ignored by detection and fits."
    )


class DetectAndMeasureTask(Task):
    """Detect sources on an exposure and measure them."""

    ConfigClass = DetectAndMeasureConfig
    _DefaultName = "detectAndMeasure"
    config: DetectAndMeasureConfig

    def run(
        self,
        exposure: Exposure,
        science: Exposure | None = None,
        *,
        visit: int | None = None,
        detector: int | None = None,
    ) -> Struct:
        """Detect and measure.

        Parameters
        ----------
        exposure : `tasks.images.Exposure`
            Difference image (or a science image) with PSF, WCS and calibration.
        science : `tasks.images.Exposure`, optional
            The science exposure on the same pixel grid: ``scienceFlux`` is
            measured on it.  Omit it to run on a science image.
        visit, detector : `int`, optional
            Ids for the rows (default from the exposure's visit info / detector).

        Returns
        -------
        result : `Struct`
            ``sources`` (`pandas.DataFrame`, one row per source, brightest
            first; named ``diaSources`` too), ``nPositive``, ``nNegative``,
            ``nDipole``, ``snrImage`` (the PSF-filtered significance image).
        """
        if exposure.psf is None:
            raise TaskError("detection needs a PSF on the exposure")
        if exposure.wcs is None:
            raise TaskError("detection needs a WCS on the exposure")
        bad_bits = 0
        for name in self.config.unusableMaskPlanes:
            try:
                bad_bits |= int(MaskPlane[name])
            except KeyError:
                raise TaskError(f"unknown mask plane {name!r}") from None
        visit = visit if visit is not None else getattr(exposure.visit_info, "visit_id", 0)
        detector = detector if detector is not None else (exposure.detector or 0)
        bbox = exposure.bbox
        cx, cy = bbox.center
        sigma = float(exposure.psf.sigma(cx, cy))
        kernel = exposure.psf.compute_kernel_image(cx, cy)
        # the matched filter needs the core of the PSF, not its far wings
        half = min(kernel.shape[0] // 2, max(2, int(np.ceil(self.config.filterRadius * sigma))))
        centre = kernel.shape[0] // 2
        kernel = kernel[centre - half : centre + half + 1, centre - half : centre + half + 1]
        min_sep = max(1, int(round(self.config.minPeakSeparation * sigma)))
        grow = int(np.ceil(self.config.footprintGrow * sigma))

        def peaks_of(filtered: np.ndarray, snr: np.ndarray):
            peaks = find_peaks(
                snr,
                self.config.threshold,
                min_separation=min_sep,
                grow=grow,
                polarity=self.config.polarity,
            )
            return peaks, *refine_centroids(filtered, peaks)

        with self.timer("detect"):
            first = filter_image(
                exposure.image, exposure.variance, kernel, mask=exposure.mask, mask_bits=bad_bits
            )
            # unusable: masked, non-finite, or without a positive variance
            # (pixels the PSF fits would drop anyway)
            bad = first.unusable
            snr = first.snr
            peaks, x, y = peaks_of(first.filtered, snr)
        with self.timer("measure"):
            table = self._measure(exposure, science, peaks, x, y, bad, sigma)
        if self.config.nPasses > 1 and len(table):
            # second pass: faint sources hidden in the wings of bright ones
            # appear once the PSF models of the first-pass sources are removed
            with self.timer("secondPass"):
                flux = np.nan_to_num(table["_instFlux"].to_numpy())
                psf_images = self._psf_images(exposure)
                residual = subtract_psf_models(exposure.image, psf_images, x, y, flux)
                filtered2 = _filtered_without_models(first, psf_images, x, y, flux)
                peaks2, x2, y2 = peaks_of(filtered2, filtered2 * first.inverse_sigma)
                if len(peaks2):
                    dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x2, y2]))
                    new = dist > 2.0 * sigma
                    if new.any():
                        peaks2 = peaks2.select(new)
                        peaks2.footprint = peaks2.footprint + int(peaks.footprint.max(initial=0))
                        extra = self._measure(
                            exposure, science, peaks2, x2[new], y2[new], bad, sigma, residual
                        )
                        table = pd.concat([table, extra], ignore_index=True)
                        peaks = Peaks(
                            *(
                                np.concatenate([getattr(peaks, f), getattr(peaks2, f)])
                                for f in Peaks.__annotations__
                            )
                        )
        table = self._merge_dipoles(table, self.config.dipoleRadius * sigma)
        table = self._finish(table, exposure, visit, detector)
        n_dipole = int(table["isDipole"].sum()) if len(table) else 0
        self.metadata.update(
            {
                "nSources": len(table),
                "nPositive": int((peaks.polarity > 0).sum()),
                "nNegative": int((peaks.polarity < 0).sum()),
                "nDipole": n_dipole,
            }
        )
        return Struct(
            sources=table,
            diaSources=table,
            nPositive=int((peaks.polarity > 0).sum()),
            nNegative=int((peaks.polarity < 0).sum()),
            nDipole=n_dipole,
            snrImage=snr,
        )

    # -- measurement ----------------------------------------------------------
    @staticmethod
    def _psf_images(exposure: Exposure):
        """PSF images for array positions of ``exposure``."""
        x0, y0 = exposure.bbox.x0, exposure.bbox.y0

        def psf_images(ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
            return exposure.psf.compute_images(ax + x0, ay + y0)

        return psf_images

    def _measure(
        self,
        exposure: Exposure,
        science: Exposure | None,
        peaks,
        x: np.ndarray,
        y: np.ndarray,
        bad: np.ndarray,
        sigma: float,
        image: np.ndarray | None = None,
    ) -> pd.DataFrame:
        bbox = exposure.bbox
        image = exposure.image if image is None else image
        fit = psf_fluxes(image, exposure.variance, bad, self._psf_images(exposure), x, y)
        calib = exposure.photo_calib
        flux, flux_err = fit.flux, fit.flux_err
        if calib is not None:
            flux, flux_err = calib.instflux_to_nanojansky(flux, flux_err)
        snr_fit = fit.flux / fit.flux_err
        # centroid errors of a PSF fit: sqrt(2) sigma / snr per axis
        pos_err = np.sqrt(2.0) * sigma / np.abs(snr_fit)
        table = {
            "x": x + bbox.x0,
            "y": y + bbox.y0,
            "xErr": pos_err,
            "yErr": pos_err,
            "snr": peaks.snr,
            "psfFlux": flux,
            "psfFluxErr": flux_err,
            "psfChi2": fit.chi2,
            "psfNdata": fit.ndata.astype(np.int64),
            "psfFlux_flag": fit.flag_no_good | ~np.isfinite(fit.flux),
            "psfFlux_flag_edge": fit.flag_edge,
            "psfFlux_flag_noGoodPixels": fit.flag_no_good,
            "isNegative": peaks.polarity < 0,
            "bboxSize": peaks.bbox_size,
            "_footprint": peaks.footprint,
            "_instFlux": fit.flux,
            "_half": np.maximum(peaks.bbox_size // 2, 1),
        }
        if science is not None:
            if science.bbox != bbox:
                raise TaskError(f"science box {science.bbox} differs from {bbox}")
            sbad = ((science.mask & int(MaskPlane.NO_DATA | MaskPlane.BAD)) != 0) | ~np.isfinite(
                science.image
            )

            sfit = psf_fluxes(
                science.image, science.variance, sbad, self._psf_images(science), x, y
            )
            sflux, sflux_err = sfit.flux, sfit.flux_err
            if science.photo_calib is not None:
                sflux, sflux_err = science.photo_calib.instflux_to_nanojansky(sflux, sflux_err)
            table["scienceFlux"] = sflux
            table["scienceFluxErr"] = sflux_err
            table["forced_PsfFlux_flag"] = sfit.flag_no_good | ~np.isfinite(sfit.flux)
            table["forced_PsfFlux_flag_edge"] = sfit.flag_edge
            table["forced_PsfFlux_flag_noGoodPixels"] = sfit.flag_no_good
        return pd.DataFrame(table)

    def _merge_dipoles(self, table: pd.DataFrame, radius: float) -> pd.DataFrame:
        """Pair each negative peak with the nearest positive one within ``radius``."""
        table = table.assign(
            isDipole=False,
            dipoleMeanFlux=np.nan,
            dipoleFluxDiff=np.nan,
            dipoleLength=np.nan,
            dipoleAngle=np.nan,
            _neg_x=np.nan,
            _neg_y=np.nan,
            _pos_x=np.nan,
            _pos_y=np.nan,
        )
        pos = np.flatnonzero(~table["isNegative"].to_numpy())
        neg = np.flatnonzero(table["isNegative"].to_numpy())
        if len(pos) == 0 or len(neg) == 0 or radius <= 0:
            return table
        xy = table[["x", "y"]].to_numpy()
        dist, nearest = cKDTree(xy[pos]).query(xy[neg], distance_upper_bound=radius)
        order = np.argsort(dist)
        taken = set()
        drop = []
        for j in order:
            if not np.isfinite(dist[j]) or nearest[j] in taken:
                continue
            p, n = pos[nearest[j]], neg[j]
            taken.add(nearest[j])
            fp, fn = table.at[p, "psfFlux"], table.at[n, "psfFlux"]
            keep, other = (p, n) if abs(table.at[p, "snr"]) >= abs(table.at[n, "snr"]) else (n, p)
            table.at[keep, "isDipole"] = True
            table.at[keep, "dipoleMeanFlux"] = 0.5 * (abs(fp) + abs(fn))
            table.at[keep, "dipoleFluxDiff"] = abs(fp) - abs(fn)
            table.at[keep, "dipoleLength"] = float(np.hypot(*(xy[p] - xy[n])))  # px, see _finish
            table.at[keep, "_neg_x"], table.at[keep, "_neg_y"] = xy[n]
            table.at[keep, "_pos_x"], table.at[keep, "_pos_y"] = xy[p]
            table.at[keep, "bboxSize"] = max(
                table.at[p, "bboxSize"], table.at[n, "bboxSize"]
            ) + int(np.ceil(np.hypot(*(xy[p] - xy[n]))))
            drop.append(other)
        return table.drop(index=drop)

    def _finish(
        self, table: pd.DataFrame, exposure: Exposure, visit: int, detector: int
    ) -> pd.DataFrame:
        """Sky positions, ids, flags and bookkeeping columns."""
        n = len(table)
        x = table["x"].to_numpy(float)
        y = table["y"].to_numpy(float)
        ra, dec = exposure.pixel_to_sky(x, y)
        # pixel scale (deg) from the WCS Jacobian at each source
        ra_x, dec_x = exposure.pixel_to_sky(x + 1.0, y)
        ra_y, dec_y = exposure.pixel_to_sky(x, y + 1.0)
        cosd = np.cos(np.radians(dec))
        ddx = np.hypot((ra_x - ra) * cosd, dec_x - dec)
        ddy = np.hypot((ra_y - ra) * cosd, dec_y - dec)
        scale_deg = np.sqrt(ddx * ddy)
        ra_err = table["xErr"].to_numpy(float) * scale_deg
        if n and table["isDipole"].any():
            dip = table["isDipole"].to_numpy(bool)
            table["dipoleLength"] = np.where(
                dip, table["dipoleLength"].to_numpy(float) * scale_deg * 3600.0, np.nan
            )
            # bearing (north through east) from the negative to the positive lobe
            ra_n, dec_n = exposure.pixel_to_sky(
                table["_neg_x"].to_numpy(), table["_neg_y"].to_numpy()
            )
            ra_p, dec_p = exposure.pixel_to_sky(
                table["_pos_x"].to_numpy(), table["_pos_y"].to_numpy()
            )
            east = ((ra_p - ra_n + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec))
            bearing = np.degrees(np.arctan2(east, dec_p - dec_n)) % 360.0
            table["dipoleAngle"] = np.where(dip, bearing, np.nan)
        cx = np.floor(x - exposure.bbox.x0 + 0.5).astype(np.int64)
        cy = np.floor(y - exposure.bbox.y0 + 0.5).astype(np.int64)
        halves = table["_half"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        footprint_bits = mask_bits_near(exposure.mask, cx, cy, halves)
        centre_bits = mask_bits_near(exposure.mask, cx, cy, 1)
        for name, plane in PIXEL_FLAGS.items():
            table[name] = (footprint_bits & int(plane)) != 0
        for name, plane in _CENTER_FLAGS.items():
            table[name] = (centre_bits & int(plane)) != 0
        table["pixelFlags_offimage"] = ~np.asarray(exposure.bbox.contains(x, y), dtype=bool)
        table["pixelFlags"] = table["pixelFlags_offimage"].to_numpy(bool)
        table["centroid_flag"] = ~(np.isfinite(x) & np.isfinite(y))
        table.insert(0, "diaSourceId", make_ids(visit, detector, n))
        table.insert(1, "visit", np.int64(visit))
        table.insert(2, "detector", np.int64(detector))
        table["band"] = exposure.band
        info = exposure.visit_info
        table["midpointMjdTai"] = info.midpoint_mjd_tai if info is not None else np.nan
        table["exposureTime"] = info.exposure_time if info is not None else np.nan
        table["ra"] = ra
        table["dec"] = dec
        table["raErr"] = ra_err
        table["decErr"] = table["yErr"].to_numpy(float) * scale_deg
        table["ra_dec_Cov"] = 0.0
        table["timeProcessedMjdTai"] = Time.now().tai.mjd
        table["dipoleFitAttempted"] = False
        table["dipoleNdata"] = 0
        table["trailNdata"] = 0
        table = table.drop(columns=[c for c in table.columns if c.startswith("_")]).reset_index(
            drop=True
        )
        return table
