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
from scipy import ndimage, signal

from tasks.base import Struct, Task, TaskConfig, TaskError
from tasks.diffim.kernel import (
    KernelFitError,
    MatchingKernel,
    alard_lupton_basis,
    fit_matching_kernel,
    gaussian_matching_kernel,
)
from tasks.diffim.peaks import find_peaks, psf_filter
from tasks.images import Exposure, MaskPlane

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
    maxStars: int = Field(250, ge=5, description="Most stars used in the kernel fit.")
    minStars: int = Field(8, ge=3, description="Fewest stars for a fitted kernel.")
    starMinSnr: float = Field(20.0, gt=0, description="Minimum template S/N of kernel stars.")
    neighbourRadius: float = Field(
        2.5,
        gt=0,
        description="Radius (science PSF sigmas) of the discs of neighbouring sources given "
        "zero weight in a kernel star's stamp.",
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


def _bits(names: list[str]) -> int:
    bits = 0
    for name in names:
        try:
            bits |= int(MaskPlane[name])
        except KeyError:
            raise TaskError(f"unknown mask plane {name!r}") from None
    return bits


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
        bad_bits = _bits(self.config.badMaskPlanes)
        scale = 1.0
        if template.photo_calib is not None and science.photo_calib is not None:
            scale = template.photo_calib.calibration_mean / science.photo_calib.calibration_mean
        t_img = template.image.astype(np.float32) * np.float32(scale)
        t_var = template.variance.astype(np.float32) * np.float32(scale**2)
        t_missing = ~np.isfinite(t_img) | ((template.mask & int(MaskPlane.NO_DATA)) != 0)
        t_img[t_missing] = 0.0
        t_var[~np.isfinite(t_var) | t_missing] = 0.0
        # science on the template's grid (zero outside the science box)
        sci_img = np.zeros(template.bbox.shape, dtype=np.float32)
        sci_var = np.full(template.bbox.shape, np.inf, dtype=np.float32)
        sci_bad = np.ones(template.bbox.shape, dtype=bool)
        inner = template.bbox.slices(science.bbox)
        sci_img[inner] = science.image
        sci_var[inner] = science.variance
        sci_bad[inner] = ((science.mask & bad_bits) != 0) | ~np.isfinite(science.image)
        sci_img[~np.isfinite(sci_img)] = 0.0

        cx, cy = science.bbox.center
        sigma_s = float(science.psf.sigma(cx, cy))
        sigma_t = float(template.psf.sigma(cx, cy))
        half = max(3, int(np.ceil(self.config.kernelSizeSigma * sigma_s)))
        mode = self.config.mode
        kernel: MatchingKernel | None = None
        n_stars = 0
        if mode == "fit":
            with self.timer("fitKernel"):
                try:
                    kernel, n_stars = self._fit(
                        template,
                        t_img,
                        t_var,
                        t_missing,
                        sci_img,
                        sci_var,
                        sci_bad,
                        sigma_s,
                        sigma_t,
                        half,
                    )
                except KernelFitError as exc:
                    self.log.warning("kernel fit failed (%s); using the Gaussian kernel", exc)
                    mode = "gaussian"
        if kernel is None:
            kernel = gaussian_matching_kernel(sigma_s, sigma_t, half, template.bbox.shape)
        with self.timer("convolve"):
            matched = kernel.convolve(t_img) + kernel.background
            k0 = kernel.spatial_kernels()[0]
            k2 = (k0 * k0).astype(np.float32)
            level = float(np.median(t_var[::7, ::7]))
            if np.allclose(t_var[~t_missing], level, rtol=1e-5, atol=0.0):
                # flat template variance (a coadd): the convolution is a product
                matched_var = np.where(t_missing, 0.0, level * float(k2.sum()))
            else:
                matched_var = signal.oaconvolve(t_var, k2, mode="same")
            if t_missing.any():
                grown_missing = ndimage.maximum_filter(t_missing, size=kernel.size + 2)
            else:
                grown_missing = t_missing
        m_img = matched[inner]
        m_var = np.clip(matched_var[inner], 0.0, None)
        m_missing = grown_missing[inner]
        diff = (science.image - m_img).astype(np.float32)
        diff_var = (science.variance + m_var).astype(np.float32)
        mask = science.mask.copy()
        mask[m_missing] |= np.uint32(MaskPlane.NO_DATA)
        # Saturated stars cannot be subtracted exactly beyond their SAT pixels
        # either (their PSF wings carry more flux than the kernel fit ever saw):
        # flag the halo SUSPECT so detections there carry pixelFlags_suspect.
        saturated = (mask & np.uint32(MaskPlane.SAT)) != 0
        if saturated.any() and self.config.saturatedHaloSigma > 0:
            radius = int(np.ceil(self.config.saturatedHaloSigma * sigma_s))
            halo = ndimage.maximum_filter(saturated, size=2 * radius + 1)
            mask[halo & ~saturated] |= np.uint32(MaskPlane.SUSPECT)
        diff[m_missing] = np.nan
        diff_var[m_missing] = np.nan
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
        matched_exp = Exposure(
            np.where(m_missing, np.nan, m_img).astype(np.float32),
            np.where(m_missing, np.uint32(MaskPlane.NO_DATA), np.uint32(0)).astype(np.uint32),
            np.where(m_missing, np.nan, m_var).astype(np.float32),
            **common,
        )
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
        template: Exposure,
        t_img: np.ndarray,
        t_var: np.ndarray,
        t_missing: np.ndarray,
        sci_img: np.ndarray,
        sci_var: np.ndarray,
        sci_bad: np.ndarray,
        sigma_s: float,
        sigma_t: float,
        half: int,
    ) -> tuple[MatchingKernel, int]:
        cfg = self.config
        width = np.sqrt(max(sigma_s**2 - sigma_t**2, 0.25))
        sigmas = tuple(max(f * width, 0.5) for f in cfg.basisSigmaFactors)
        basis = alard_lupton_basis(half, sigmas, cfg.basisDegrees)
        stamp_half = max(3, int(np.ceil(cfg.stampSizeSigma * sigma_s)))
        # stars: peaks of the template, bright, with clean pixels around
        cx, cy = template.bbox.center
        psf_kernel = template.psf.compute_kernel_image(cx, cy)
        t_var_safe = np.where(t_missing, np.inf, np.where(t_var > 0, t_var, np.inf))
        filtered_var = None
        level = float(np.median(t_var[::7, ::7]))
        if np.allclose(t_var[~t_missing], level, rtol=1e-5, atol=0.0):
            # flat coadd variance: no convolution needed (S/N slightly low near holes)
            filtered_var = np.full(t_var.shape, level * float((psf_kernel**2).sum()), np.float32)
        _, snr = psf_filter(
            t_img, t_var_safe, psf_kernel, bad=t_missing, filtered_variance=filtered_var
        )
        peaks = find_peaks(snr, cfg.starMinSnr, min_separation=2, polarity="positive")
        if len(peaks) == 0:
            raise KernelFitError("no star above the template S/N threshold")
        # Neighbours do not disqualify a star: the pixels of other template
        # sources (discs of `neighbourRadius` PSF sigmas) get zero weight in its
        # stamp, and stars that still do not fit are clipped.  Brightest first.
        all_peaks = find_peaks(snr, 5.0, min_separation=2, polarity="positive")
        chosen = np.arange(min(len(peaks), cfg.maxStars))
        usable = ~(t_missing | sci_bad | ~np.isfinite(sci_var))
        kernel, used = fit_matching_kernel(
            sci_img,
            np.where(np.isfinite(sci_var), sci_var, 1e30),
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
        )
        return kernel, int(used.sum())
