"""Detection and measurement on any exposure: DiaSources or a single-frame ``src`` table.

`DetectAndMeasureTask.run(exposure, science=None, ...)` correlates the
exposure with its PSF, finds positive and negative footprints above the
threshold (5 sigma by default) and their peaks (`tasks.diffim.peaks`),
centroids them, fits PSF fluxes at the centroids (`tasks.diffim.measure`),
flags pixels, and pairs a positive and a negative peak closer than
``dipoleRadius`` PSF widths into one dipole source (``isDipole``).

On a difference image (pass the ``science`` exposure) the rows use the APDB
``DiaSource`` column names: ``diaSourceId`` from
`tasks.core.ids.make_ids`, ``psfFlux``/``psfFluxErr`` on the difference and
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

from tasks.core.base import Struct, Task, TaskConfig, TaskError
from tasks.core.ids import make_ids
from tasks.diffim.measure import (
    extract_stamps,
    mask_all_near,
    mask_bits_near,
    psf_fluxes,
    psf_model_stamps,
    subtract_psf_models,
)
from tasks.diffim.peaks import FilteredImage, Peaks, filter_image, find_peaks, refine_centroids
from tasks.diffim.pixel_loops import add_stamps
from tasks.diffim.systematics import (
    RegistrationNoise,
    corrected_significance,
    estimate_registration_noise,
    filtered_with_gradients,
    flux_change_significance,
    nearest_bright_source,
    offset_source_significance,
)
from tasks.images import Exposure, MaskPlane, bits_from_names

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

_CENTER_ALL_PLANES = {
    "bad": MaskPlane.BAD,
    "cr": MaskPlane.CR,
    "edge": MaskPlane.EDGE | MaskPlane.NO_DATA,
    "nodata": MaskPlane.NO_DATA,
    "interpolated": MaskPlane.INTRP,
    "saturated": MaskPlane.SAT,
    "suspect": MaskPlane.SUSPECT,
}
"""Planes of the ``pixelFlags_{name}CenterAll`` flags: every pixel of the 3 x 3 centre set."""

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
    badSourceFlags: list[str] = Field(
        [
            "pixelFlags_offimage",
            "pixelFlags_interpolatedCenterAll",
            "pixelFlags_badCenterAll",
            "pixelFlags_edgeCenterAll",
            "pixelFlags_nodataCenterAll",
            "pixelFlags_saturatedCenterAll",
        ],
        description="Difference images (``science`` given): sources with any of these flags "
        "are removed (the defaults of the LSST detectAndMeasure task).  Names are DiaSource "
        "flag columns (pixelFlags_*, *_flag) or pixelFlags_{plane}CenterAll: every pixel of "
        "the 3 x 3 centre has the plane (bad, cr, edge, nodata, interpolated, saturated, suspect).",
    )
    registrationSigma: float = Field(
        -1.0,
        description="Difference images (``science`` given): registration noise, pixels, "
        "added to the variance of the filtered image as sigma**2 |grad S|**2 with S the "
        "PSF-filtered science image (the ZOGY corrected score, Zackay et al. 2016); peaks "
        "below the threshold after it are dropped.  Negative: measured from the dipole "
        "residuals of bright stars (`tasks.diffim.systematics`); 0: off.",
    )
    doNeighbourRescue: bool = Field(
        True,
        description="Difference images: try the neighbour rescue below (a transient next to "
        "a bright star, `tasks.diffim.systematics.offset_source_significance`).",
    )
    minNeighbourOffset: float = Field(
        1.5,
        ge=0,
        description="Difference images: a peak that fails the registration-corrected "
        "threshold next to a science source is kept as a source of its own when its flux, "
        "fitted with the neighbour's flux change and shift as nuisances, passes the threshold "
        "and it lies at least this many pixels from the neighbour (closer, it is the "
        "neighbour's own change).",
    )
    maxNeighbourOffset: float = Field(
        10.0,
        ge=0,
        description="Largest distance (PSF sigmas) from the neighbour at which that rescue "
        "is tried: farther out the neighbour's registration term rarely hides a source, and "
        "the PSF-wing residuals of very bright stars there would pass as sources.",
    )
    neighbourShiftPrior: float = Field(
        2.0,
        ge=0,
        description="The neighbour rescue's fit gives the neighbour's shift a Gaussian prior "
        "of this many times the measured registration noise (0: the shift is free).",
    )
    maxNeighbourTemplateRatio: float = Field(
        0.3,
        ge=0,
        description="The neighbour rescue keeps a source only if the same fit on the matched "
        "template (science minus difference) gives at most this fraction of its flux, "
        "either sign: a new source is absent from the template, while PSF-wing and "
        "blend residuals of static stars have template counterparts (ratios beyond 0.38 "
        "on the simulator's visits, below 0.23 for injected transients).",
    )
    registrationStarSnr: float = Field(
        10.0,
        gt=0,
        description="Peak-pixel S/N of the science stars measuring the registration noise.",
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
        bad_bits = bits_from_names(self.config.unusableMaskPlanes)
        self.metadata["nRegistrationRejected"] = 0
        self.metadata["nNeighbourRescued"] = 0
        self.metadata["nBadSourcesRemoved"] = 0
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
            noise = self._registration_noise(exposure, science, first)
            peaks, x, y = peaks_of(first.filtered, snr)
            peaks, x, y = self._corrected(
                peaks, x, y, first.filtered, exposure, exposure.image, first, science, noise, sigma
            )
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
                peaks2, x2, y2 = self._corrected(
                    peaks2, x2, y2, filtered2, exposure, residual, first, science, noise, sigma
                )
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
        if science is not None and len(table):
            bad_rows = self._bad_sources(table, exposure)
            self.metadata["nBadSourcesRemoved"] = int(bad_rows.sum())
            table = table[~bad_rows].reset_index(drop=True)
            table["diaSourceId"] = make_ids(visit, detector, len(table))
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

    # -- registration noise (ZOGY corrected score) ------------------------------
    def _registration_noise(
        self, exposure: Exposure, science: Exposure | None, first: FilteredImage
    ) -> RegistrationNoise | None:
        """Return the registration noise of a difference image (`None`: science image or off)."""
        sigma = self.config.registrationSigma
        if science is None or sigma == 0:
            return None
        if sigma > 0:
            noise = RegistrationNoise(sigma, sigma, 0)
        else:
            noise = estimate_registration_noise(
                exposure.image,
                exposure.variance,
                science.image,
                science.variance,
                first.unusable,
                first.kernel,
                min_pixel_snr=self.config.registrationStarSnr,
            )
        if noise is not None:
            self.metadata.update(
                {
                    "registrationSigmaX": noise.sigma_x,
                    "registrationSigmaY": noise.sigma_y,
                    "registrationStars": noise.n_stars,
                }
            )
        return noise

    def _corrected(
        self,
        peaks: Peaks,
        x: np.ndarray,
        y: np.ndarray,
        filtered: np.ndarray,
        exposure: Exposure,
        image: np.ndarray,
        first: FilteredImage,
        science: Exposure | None,
        noise: RegistrationNoise | None,
        sigma: float,
    ) -> tuple[Peaks, np.ndarray, np.ndarray]:
        """Keep the peaks that pass the threshold once registration noise is allowed for.

        A peak passes on its corrected significance, or else on the
        significance of a flux change of a science source under it with the
        shift fitted out (`tasks.diffim.systematics.flux_change_significance`);
        that value becomes its ``snr``.  ``image`` is the image ``filtered``
        came from (the difference, or the second pass's residual).
        """
        if noise is None or not len(peaks):
            return peaks, x, y
        _, gx, gy = filtered_with_gradients(
            science.image, first.unusable, first.kernel, peaks.ix, peaks.iy
        )
        snr = corrected_significance(
            filtered[peaks.iy, peaks.ix].astype(np.float64),
            first.filtered_variance[peaks.iy, peaks.ix],
            gx,
            gy,
            noise,
        )
        threshold = np.float32(self.config.threshold)
        search = max(1, int(np.ceil(self.config.dipoleRadius * sigma)))
        keep = np.abs(snr) >= threshold
        if not keep.all():
            # a flux change of a bright source under the peak, its shift fitted out
            drop = np.flatnonzero(~keep)
            change, sx, sy = flux_change_significance(
                image,
                exposure.variance,
                science.image,
                first.unusable,
                first.kernel,
                peaks.ix[drop],
                peaks.iy[drop],
                search=search,
                psf_images=self._psf_images(exposure),
            )
            rescued = (np.abs(change) >= threshold) & (np.sign(change) == peaks.polarity[drop])
            # a source of its own next to a bright neighbour (a transient by its
            # host): its flux with the neighbour's change and shift fitted out
            x, y = x.copy(), y.copy()
            if self.config.doNeighbourRescue:
                own, ox, oy, alone = self._neighbour_rescue(
                    drop, peaks, x, y, filtered, exposure, image, first, science, noise, search
                )
                kept = drop[alone]
                keep[kept] = True
                snr[kept] = own[alone]
                x[kept], y[kept] = ox[alone], oy[alone]
                peaks.ix[kept] = np.floor(ox[alone] + 0.5).astype(np.int64)
                peaks.iy[kept] = np.floor(oy[alone] + 0.5).astype(np.int64)
                rescued &= ~alone
                self.metadata["nNeighbourRescued"] = int(
                    self.metadata.get("nNeighbourRescued", 0) + len(kept)
                )
            moved = drop[rescued]
            keep[moved] = True
            snr[moved] = change[rescued]
            # the source is at the science peak, not on the dipole lobe
            x[moved], y[moved] = sx[rescued], sy[rescued]
            peaks.ix[moved] = np.floor(sx[rescued] + 0.5).astype(np.int64)
            peaks.iy[moved] = np.floor(sy[rescued] + 0.5).astype(np.int64)
            # several lobes of one source lead to it: keep one, and none where
            # a peak that passed on its own already is
            taken = [(x[i], y[i]) for i in np.flatnonzero(keep) if i not in set(moved)]
            for i in moved[np.argsort(-np.abs(snr[moved]), kind="stable")]:
                if any(np.hypot(x[i] - tx, y[i] - ty) < 2.0 * sigma for tx, ty in taken):
                    keep[i] = False
                else:
                    taken.append((x[i], y[i]))
        self.metadata["nRegistrationRejected"] = int(
            self.metadata.get("nRegistrationRejected", 0) + (~keep).sum()
        )
        peaks = peaks.select(keep)
        peaks.snr = snr[keep]
        return peaks, x[keep], y[keep]

    def _neighbour_rescue(
        self,
        drop: np.ndarray,
        peaks: Peaks,
        x: np.ndarray,
        y: np.ndarray,
        filtered: np.ndarray,
        exposure: Exposure,
        image: np.ndarray,
        first: FilteredImage,
        science: Exposure,
        noise: RegistrationNoise,
        search: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Significance of the dropped peaks as sources of their own beside a bright neighbour.

        The neighbour is the nearest source of the matched template (science
        minus difference) at least three times brighter than the peak
        (`tasks.diffim.systematics.nearest_bright_source`); the peak's flux
        is fitted with the neighbour's flux change and shift as nuisances
        (`tasks.diffim.systematics.offset_source_significance`).  A peak is
        kept when that significance passes the threshold with the peak's
        sign, the template holds at most ``maxNeighbourTemplateRatio`` of its
        flux there, and it lies between ``minNeighbourOffset`` pixels and
        ``maxNeighbourOffset`` PSF sigmas from the neighbour.

        Returns
        -------
        significance, x, y : `numpy.ndarray`
            Per dropped peak (0 and the input position where not tried).
        alone : `numpy.ndarray` of bool
            The peaks to keep.
        """
        n = len(drop)
        own = np.zeros(n)
        ox, oy = x[drop].copy(), y[drop].copy()
        alone = np.zeros(n, dtype=bool)
        template = science.image - exposure.image
        value = np.abs(filtered[peaks.iy[drop], peaks.ix[drop]]).astype(np.float64)
        found, nx, ny = nearest_bright_source(
            template,
            first.unusable,
            first.kernel,
            peaks.ix[drop],
            peaks.iy[drop],
            3.0 * value,
            search=search,
        )
        offset = np.hypot(ox - nx, oy - ny)
        psf_sigma = float(exposure.psf.sigma(*exposure.bbox.center))
        tried = np.flatnonzero(
            found
            & (offset >= self.config.minNeighbourOffset)
            & (offset <= self.config.maxNeighbourOffset * psf_sigma)
        )
        if not len(tried):
            return own, ox, oy, alone
        sig, tx, ty, ratio, sx, sy = offset_source_significance(
            image,
            exposure.variance,
            first.unusable,
            self._psf_images(exposure),
            ox[tried],
            oy[tried],
            nx[tried],
            ny[tried],
            template=template,
            science=science.image,
            shift_sigma=self.config.neighbourShiftPrior * max(noise.sigma_x, noise.sigma_y),
        )
        threshold = self.config.threshold
        ok = (np.abs(sig) >= threshold) & (np.sign(sig) == peaks.polarity[drop[tried]])
        # a new source: the matched template holds (almost) nothing there
        ok &= np.abs(ratio) <= self.config.maxNeighbourTemplateRatio
        # it must stay apart from the neighbour (else it is the neighbour's change)
        ok &= np.hypot(tx - sx, ty - sy) >= self.config.minNeighbourOffset
        own[tried], ox[tried], oy[tried] = sig, tx, ty
        alone[tried] = ok
        return own, ox, oy, alone

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

    def _bad_sources(self, table: pd.DataFrame, exposure: Exposure) -> np.ndarray:
        """Rows carrying any of ``badSourceFlags``.

        Raises
        ------
        TaskError
            If a flag name is neither a boolean column nor a ``CenterAll`` flag.
        """
        bad = np.zeros(len(table), dtype=bool)
        cx = np.floor(table["x"].to_numpy(float) - exposure.bbox.x0 + 0.5).astype(np.int64)
        cy = np.floor(table["y"].to_numpy(float) - exposure.bbox.y0 + 0.5).astype(np.int64)
        for name in self.config.badSourceFlags:
            plane_name = name.removeprefix("pixelFlags_").removesuffix("CenterAll")
            if name.endswith("CenterAll") and plane_name in _CENTER_ALL_PLANES:
                planes = int(_CENTER_ALL_PLANES[plane_name])
                bad |= mask_all_near(exposure.mask, cx, cy, planes)
            elif name in table.columns and table[name].dtype == bool:
                bad |= table[name].to_numpy(bool)
            else:
                raise TaskError(f"unknown bad-source flag {name!r}")
        return bad

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
        # Jacobian of (ra, dec) with respect to (x, y), degrees per pixel
        j_ra_x = (ra_x - ra + 180.0) % 360.0 - 180.0
        j_ra_y = (ra_y - ra + 180.0) % 360.0 - 180.0
        j_dec_x, j_dec_y = dec_x - dec, dec_y - dec
        ddx = np.hypot(j_ra_x * cosd, j_dec_x)
        ddy = np.hypot(j_ra_y * cosd, j_dec_y)
        scale_deg = np.sqrt(ddx * ddy)
        # covariance of (ra, dec) from the centroid errors: J diag(xErr², yErr²) Jᵀ;
        # raErr is the error of the ra coordinate (Rubin's convention), not on the sky
        var_x = table["xErr"].to_numpy(float) ** 2
        var_y = table["yErr"].to_numpy(float) ** 2
        ra_err = np.sqrt(j_ra_x**2 * var_x + j_ra_y**2 * var_y)
        dec_err = np.sqrt(j_dec_x**2 * var_x + j_dec_y**2 * var_y)
        ra_dec_cov = j_ra_x * j_dec_x * var_x + j_ra_y * j_dec_y * var_y
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
        table["decErr"] = dec_err
        table["ra_dec_Cov"] = ra_dec_cov
        table["timeProcessedMjdTai"] = Time.now().tai.mjd
        table["dipoleFitAttempted"] = False
        table["dipoleNdata"] = 0
        table["trailNdata"] = 0
        table = table.drop(columns=[c for c in table.columns if c.startswith("_")]).reset_index(
            drop=True
        )
        return table
