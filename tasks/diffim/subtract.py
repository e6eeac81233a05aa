"""Image subtraction: science minus the PSF-matched template.

`SubtractImagesTask.run(template, science)` brings the template (already
warped onto the science WCS, e.g. by `tasks.dcr.GetDcrTemplateTask`) to
the science image's photometric units, fits an Alard-Lupton kernel on
bright isolated stars that turns the template PSF into the science PSF
(`tasks.diffim.kernel`), convolves the template with it and subtracts.  The
difference image keeps the science PSF, WCS, calibration and visit info; its
variance is ``V_sci + K**2 ⊗ V_tmpl``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from tasks.core.base import Struct, Task, TaskConfig, TaskError
from tasks.diffim.fftconv import TiledSpectrum
from tasks.diffim.kernel import (
    KernelFitError,
    MatchingKernel,
    alard_lupton_basis,
    clean_stamps,
    fit_matching_kernel,
    gaussian_matching_kernel,
)
from tasks.diffim.peaks import filter_image, find_peaks
from tasks.diffim.pixel_loops import dilate_box
from tasks.diffim.plane_loops import (
    assemble_difference,
    prepare_template,
    science_on_template_grid,
)
from tasks.images import Exposure, MaskPlane, bits_from_names

__all__ = ["SubtractImagesConfig", "SubtractImagesTask"]


class SubtractImagesConfig(TaskConfig):
    """Configuration of `SubtractImagesTask`."""

    mode: Literal["fit", "gaussian"] = Field(
        "fit",
        description="'fit': Alard-Lupton kernel fitted on stars (falls back to 'gaussian' when "
        "too few stars); 'gaussian': kernel from the two PSF models' widths.",
    )
    basisSigmaFactors: tuple[float, ...] = Field(
        (0.5, 1.0, 2.0),
        description="Widths of the basis Gaussians in units of the matching width "
        "sqrt(sigma_sci**2 - sigma_tmpl**2) (floored at 0.5 px).",
    )
    basisDegrees: tuple[int, ...] = Field(
        (4, 2, 2), description="Polynomial degree multiplying each basis Gaussian."
    )
    kernelSizeSigma: float = Field(
        4.5, gt=0, description="Kernel half-size in units of the science PSF sigma."
    )
    stampSizeSigma: float = Field(
        4.5, gt=0, description="Half-size of the fitted star stamps in science PSF sigmas."
    )
    spatialOrder: int = Field(1, ge=0, le=1, description="Spatial order of the kernel (0 or 1).")
    constantKernelSum: bool = Field(
        True,
        description="Keep the kernel sum (photometric scale) constant over the image: only "
        "the zero-sum basis kernels vary spatially (Alard 2000).",
    )
    maxStars: int = Field(250, ge=5, description="Most stars used in the kernel fit.")
    minStars: int = Field(8, ge=3, description="Fewest stars for a fitted kernel.")
    starMinSnr: float = Field(20.0, gt=0, description="Minimum template S/N of kernel stars.")
    neighbourRadius: float = Field(
        2.5,
        gt=0,
        description="Radius (science PSF sigmas) of the discs of neighbouring sources given "
        "zero weight in a kernel star's stamp.",
    )
    fitBackground: bool = Field(
        True, description="Fit a constant background difference with the kernel."
    )
    nIter: int = Field(3, ge=1, description="Star rejection iterations of the kernel fit.")
    clipSigma: float = Field(3.0, gt=0, description="Rejection threshold (robust sigma of chi2).")
    saturatedHaloSigma: float = Field(
        6.0,
        ge=0,
        description="Difference-image pixels within this many science PSF sigmas of a "
        "saturated pixel are flagged SUSPECT (0 disables).",
    )
    badMaskPlanes: list[str] = Field(
        ["NO_DATA", "BAD", "SAT", "CR"],
        description="Mask planes excluded from kernel stamps.",
    )


def _is_flat(variance: np.ndarray, missing: np.ndarray, level: float) -> bool:
    """Whether the variance equals ``level`` (relative 1e-5) on every pixel not missing.

    Checked on a sparse sample first: a varying plane is usually rejected there.
    """
    sample = variance[::7, ::7][~missing[::7, ::7]]
    if not np.allclose(sample, level, rtol=1e-5, atol=0.0):
        return False
    return bool(np.allclose(variance[~missing], level, rtol=1e-5, atol=0.0))


class SubtractImagesTask(Task):
    """Subtract a PSF-matched template from a science exposure."""

    ConfigClass = SubtractImagesConfig
    _DefaultName = "subtractImages"
    config: SubtractImagesConfig

    def run(self, template: Exposure, science: Exposure) -> Struct:
        """Match the template to the science image and subtract.

        Parameters
        ----------
        template : `tasks.images.Exposure`
            Template on the science image's WCS; its box must contain the
            science box (a border around it is used by the convolution).
        science : `tasks.images.Exposure`
            Science exposure with PSF and calibration.

        Returns
        -------
        result : `Struct`
            ``difference`` (`Exposure`), ``matchedTemplate`` (`Exposure`, in
            science units), ``kernel`` (`MatchingKernel`), ``kernelMode``
            (``"fit"`` or ``"gaussian"``), ``nKernelStars``, ``kernelSum``.
        """
        if science.psf is None or template.psf is None:
            raise TaskError("both science and template need a PSF to match")
        if not template.bbox.contains_box(science.bbox):
            raise TaskError(f"template box {template.bbox} does not contain {science.bbox}")
        bad_bits = bits_from_names(self.config.badMaskPlanes)
        scale = 1.0
        if template.photo_calib is not None and science.photo_calib is not None:
            scale = template.photo_calib.calibration_mean / science.photo_calib.calibration_mean
        no_data = int(MaskPlane.NO_DATA)
        t_img, t_var, t_missing, n_unusable = prepare_template(
            template.image, template.variance, template.mask, no_data, scale
        )
        inner = template.bbox.slices(science.bbox)
        offset = (inner[0].start, inner[1].start)

        cx, cy = science.bbox.center
        sigma_s = float(science.psf.sigma(cx, cy))
        sigma_t = float(template.psf.sigma(cx, cy))
        half = max(3, int(np.ceil(self.config.kernelSizeSigma * sigma_s)))
        psf_kernel = template.psf.compute_kernel_image(*template.bbox.center)
        # one forward transform of the template (missing pixels zeroed; so is
        # their variance) serves the star finding (PSF filter) and the
        # convolution with the matching kernel
        halo = max(half, psf_kernel.shape[0] // 2)
        with self.timer("transform"):
            spectrum = TiledSpectrum(t_img, halo)
            level = float(np.median(t_var[::7, ::7]))
            flat_var = _is_flat(t_var, t_missing, level)
            # flat template variance (a coadd): its convolutions are products
            var_spectrum = None if flat_var else TiledSpectrum(t_var, halo)
        mode = self.config.mode
        kernel: MatchingKernel | None = None
        n_stars = 0
        if mode == "fit":
            with self.timer("fitKernel"):
                try:
                    kernel, n_stars = self._fit(
                        t_img,
                        t_var,
                        t_missing,
                        science_on_template_grid(
                            science.image,
                            science.variance,
                            science.mask,
                            bad_bits,
                            t_missing,
                            offset,
                        ),
                        n_unusable == 0,
                        sigma_s,
                        sigma_t,
                        half,
                        psf_kernel,
                        spectrum,
                        level if flat_var else None,
                    )
                except KernelFitError as exc:
                    self.log.warning("kernel fit failed (%s); using the Gaussian kernel", exc)
                    mode = "gaussian"
        if kernel is None:
            kernel = gaussian_matching_kernel(sigma_s, sigma_t, half, template.bbox.shape)
        with self.timer("convolve"):
            if kernel.size // 2 > halo:
                spectrum = TiledSpectrum(t_img, kernel.size // 2)
            matched = kernel.convolve(t_img, spectrum)
            matched += np.float32(kernel.background)
            k0 = kernel.spatial_kernels()[0]
            k2 = (k0 * k0).astype(np.float32)
            if var_spectrum is None:
                matched_var = np.where(t_missing, np.float32(0.0), np.float32(level * k2.sum()))
            elif kernel.size // 2 > halo:
                matched_var = TiledSpectrum(t_var, kernel.size // 2).convolve(k2)
            else:
                matched_var = var_spectrum.convolve(k2)
            if t_missing.any():
                grown_missing = dilate_box(t_missing, (kernel.size + 1) // 2)
            else:
                grown_missing = t_missing
        diff, diff_var, mask, m_img, m_var, m_mask = assemble_difference(
            science.image,
            science.variance,
            science.mask,
            matched,
            matched_var,
            grown_missing,
            offset,
            no_data,
        )
        # Saturated stars cannot be subtracted exactly beyond their SAT pixels
        # either (their PSF wings carry more flux than the kernel fit ever saw):
        # flag the halo SUSPECT so detections there carry pixelFlags_suspect.
        saturated = (mask & np.uint32(MaskPlane.SAT)) != 0
        if saturated.any() and self.config.saturatedHaloSigma > 0:
            radius = int(np.ceil(self.config.saturatedHaloSigma * sigma_s))
            sat_halo = dilate_box(saturated, radius)
            mask[sat_halo & ~saturated] |= np.uint32(MaskPlane.SUSPECT)
        common = {
            "wcs": science.wcs,
            "bbox": science.bbox,
            "psf": science.psf,
            "photo_calib": science.photo_calib,
            "visit_info": science.visit_info,
            "detector": science.detector,
            "band": science.band,
        }
        difference = Exposure(diff, mask, diff_var, **common)
        matched_exp = Exposure(m_img, m_mask, m_var, **common)
        ix, iy = cx - template.bbox.x0, cy - template.bbox.y0
        kernel_sum = kernel.sum_at(ix, iy)
        self.metadata.update({"kernelMode": mode, "nKernelStars": n_stars, "kernelSum": kernel_sum})
        return Struct(
            difference=difference,
            matchedTemplate=matched_exp,
            kernel=kernel,
            kernelMode=mode,
            nKernelStars=n_stars,
            kernelSum=kernel_sum,
        )

    def _fit(
        self,
        t_img: np.ndarray,
        t_var: np.ndarray,
        t_missing: np.ndarray,
        science_planes: tuple[np.ndarray, np.ndarray, np.ndarray],
        reuse_spectrum: bool,
        sigma_s: float,
        sigma_t: float,
        half: int,
        psf_kernel: np.ndarray,
        spectrum: TiledSpectrum,
        flat_level: float | None,
    ) -> tuple[MatchingKernel, int]:
        cfg = self.config
        sci_img, sci_var, usable = science_planes
        width = np.sqrt(max(sigma_s**2 - sigma_t**2, 0.25))
        sigmas = tuple(max(f * width, 0.5) for f in cfg.basisSigmaFactors)
        basis = alard_lupton_basis(half, sigmas, cfg.basisDegrees)
        stamp_half = max(3, int(np.ceil(cfg.stampSizeSigma * sigma_s)))
        # stars: peaks of the PSF-filtered template, bright, with clean pixels around
        kernel = psf_kernel / psf_kernel.sum()
        sum_p2 = float((kernel**2).sum())
        if flat_level is not None:
            # flat coadd variance: the filtered variance is a constant
            filtered_var = np.full(t_var.shape, flat_level * sum_p2, np.float32)
        else:
            # V * sum(P**2): exact where the variance is flat over a PSF, and
            # the star selection only needs an S/N ranking
            filtered_var = t_var * np.float32(sum_p2)
        # the shared transform is of the template with its missing pixels zeroed,
        # which is what the filter needs unless some variance is not positive
        snr = filter_image(
            t_img,
            t_var,
            kernel,
            bad=t_missing,
            filtered_variance=filtered_var,
            spectrum=spectrum if reuse_spectrum else None,
        ).snr
        # Neighbours do not disqualify a star: the pixels of other template
        # sources (peaks above 5 sigma; discs of `neighbourRadius` PSF sigmas)
        # get zero weight in its stamp, and stars that still do not fit are
        # clipped.  Brightest first.  A peak does not depend on the threshold,
        # so the kernel stars are the neighbours above `starMinSnr`.
        all_peaks = find_peaks(snr, min(5.0, cfg.starMinSnr), min_separation=2, polarity="positive")
        peaks = all_peaks.select(all_peaks.snr >= np.float32(cfg.starMinSnr))
        if len(peaks) == 0:
            raise KernelFitError("no star above the template S/N threshold")
        # Only stars whose whole stamp (fitted stamp plus kernel border) is
        # usable can enter the fit, so they are chosen before the brightest
        # `maxStars` are kept: on a real image the brightest peaks are mostly
        # saturated (their SAT pixels and masked bleed trails disqualify them),
        # and keeping the brightest first left too few clean stamps.
        clean = clean_stamps(usable, peaks.ix, peaks.iy, stamp_half + half)
        if not clean.any():
            raise KernelFitError(
                f"none of {len(peaks)} stars above the template S/N threshold has a clean stamp"
            )
        chosen = np.flatnonzero(clean)[: cfg.maxStars]
        kernel, used = fit_matching_kernel(
            sci_img,
            sci_var,
            t_img,
            t_var,
            usable,
            peaks.ix[chosen].astype(float),
            peaks.iy[chosen].astype(float),
            basis,
            stamp_half=stamp_half,
            spatial_order=cfg.spatialOrder,
            n_iter=cfg.nIter,
            clip=cfg.clipSigma,
            min_stars=cfg.minStars,
            neighbours=np.column_stack([all_peaks.ix, all_peaks.iy]).astype(float),
            neighbour_radius=cfg.neighbourRadius * sigma_s,
            constant_sum=cfg.constantKernelSum,
            fit_background=cfg.fitBackground,
        )
        return kernel, int(used.sum())
