"""Detection core on numpy arrays: PSF filtering, thresholds, footprints, peaks.

The matched filter for a point source in white noise is the PSF itself: the
image correlated with the PSF kernel ``P`` (sum 1) gives, at each pixel, the
numerator of the PSF flux estimate, and the variance plane convolved with
``P**2`` its variance.  Their ratio is the detection significance; pixels with
``|snr| >= threshold`` form footprints (8-connected, one set per polarity)
and the local maxima of ``|snr|`` inside them are the peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.diffim.fftconv import TiledSpectrum
from tasks.diffim.pixel_loops import find_peaks_sparse, prepare_planes, significance

__all__ = [
    "FilteredImage",
    "Peaks",
    "filter_image",
    "find_peaks",
    "psf_filter",
    "refine_centroids",
]


@dataclass
class Peaks:
    """Peaks found in an image (array coordinates: ``x`` = column, ``y`` = row).

    Attributes
    ----------
    ix, iy : `numpy.ndarray` of int
        Pixel of the peak.
    snr : `numpy.ndarray`
        Significance of the filtered image at the peak (negative for negative peaks).
    polarity : `numpy.ndarray` of int8
        +1 for peaks of positive footprints, -1 for negative ones.
    footprint : `numpy.ndarray` of int
        Footprint number (unique over both polarities).
    bbox : `numpy.ndarray`, shape (n, 4)
        Footprint bounding box ``(x0, y0, x1, y1)`` inclusive, grown by ``grow``
        pixels and clipped to the image.
    """

    ix: np.ndarray
    iy: np.ndarray
    snr: np.ndarray
    polarity: np.ndarray
    footprint: np.ndarray
    bbox: np.ndarray

    def __len__(self) -> int:
        return len(self.ix)

    @property
    def bbox_size(self) -> np.ndarray:
        """Size of the square box holding each peak's footprint."""
        return np.maximum(
            self.bbox[:, 2] - self.bbox[:, 0] + 1, self.bbox[:, 3] - self.bbox[:, 1] + 1
        ).astype(np.int64)

    def select(self, keep: np.ndarray) -> Peaks:
        """Return the peaks selected by a boolean or index array."""
        return Peaks(
            self.ix[keep],
            self.iy[keep],
            self.snr[keep],
            self.polarity[keep],
            self.footprint[keep],
            self.bbox[keep],
        )


@dataclass
class FilteredImage:
    """An image correlated with its PSF, and what detection and later passes reuse.

    Attributes
    ----------
    filtered : `numpy.ndarray` (float32)
        ``sum(P * image)`` around each pixel (unusable pixels taken as 0).
    snr : `numpy.ndarray` (float32)
        ``filtered / sqrt(filtered_variance)``; 0 where no pixel is usable.
    filtered_variance : `numpy.ndarray` (float32)
        ``sum(P**2 * variance)``.
    inverse_sigma : `numpy.ndarray` (float32)
        ``1 / sqrt(filtered_variance)`` where ``snr`` is defined, else 0: the
        significance of any other filtered image with the same noise is
        ``filtered * inverse_sigma``.
    unusable : `numpy.ndarray` of bool
        Pixels ignored (bad, non-finite, or without a positive variance).
    kernel : `numpy.ndarray`
        The PSF kernel (sum 1) the image was correlated with.
    """

    filtered: np.ndarray
    snr: np.ndarray
    filtered_variance: np.ndarray
    inverse_sigma: np.ndarray
    unusable: np.ndarray
    kernel: np.ndarray


def filter_image(
    image: np.ndarray,
    variance: np.ndarray,
    kernel: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    filtered_variance: np.ndarray | None = None,
    spectrum: TiledSpectrum | None = None,
    mask: np.ndarray | None = None,
    mask_bits: int = 0,
) -> FilteredImage:
    """Correlate an image with its PSF: filtered image, variance and significance.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        Image and its per-pixel variance.
    kernel : `numpy.ndarray`
        PSF kernel image (odd square; normalised to sum 1 here).
    bad : `numpy.ndarray` of bool, optional
        Pixels to ignore (NO_DATA and the like); non-finite pixels are ignored too.
    filtered_variance : `numpy.ndarray`, optional
        ``sum(P**2 * variance)`` from an earlier call with the same variance,
        kernel and bad pixels (saves one convolution).
    spectrum : `tasks.diffim.fftconv.TiledSpectrum`, optional
        Tile transforms of the image with its unusable pixels already zero
        (saves the forward transform when the caller has it).
    mask : `numpy.ndarray`, optional
        Mask plane: pixels with any of ``mask_bits`` set are ignored too.
    mask_bits : `int`, optional
        See ``mask``.

    Returns
    -------
    result : `FilteredImage`
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    kernel = kernel / kernel.sum()
    flipped = kernel[::-1, ::-1]  # correlation = convolution with the flipped kernel
    img, var, unusable = prepare_planes(image, variance, bad, mask, mask_bits)
    halo = kernel.shape[0] // 2
    if spectrum is None:
        spectrum = TiledSpectrum(img, halo)
    filtered = spectrum.convolve(flipped.astype(np.float32))
    if filtered_variance is None:
        filtered_variance = TiledSpectrum(var, halo).convolve((flipped**2).astype(np.float32))
    # FFT round-off leaves tiny non-zero variances where everything is masked
    sample = var[::7, ::7][~unusable[::7, ::7]]
    floor = 1e-6 * float(np.median(sample)) * float((kernel**2).sum()) if sample.size else 0.0
    snr, inverse_sigma = significance(filtered, filtered_variance, floor, unusable)
    return FilteredImage(filtered, snr, filtered_variance, inverse_sigma, unusable, kernel)


def psf_filter(
    image: np.ndarray,
    variance: np.ndarray,
    kernel: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    filtered_variance: np.ndarray | None = None,
    return_variance: bool = False,
) -> tuple[np.ndarray, ...]:
    """Correlate an image with its PSF and return the filtered image and significance.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        Image and its per-pixel variance.
    kernel : `numpy.ndarray`
        PSF kernel image (odd square; normalised to sum 1 here).
    bad : `numpy.ndarray` of bool, optional
        Pixels to ignore (NO_DATA and the like); non-finite pixels are ignored too.
    filtered_variance : `numpy.ndarray`, optional
        ``sum(P**2 * variance)`` from an earlier call with the same variance,
        kernel and bad pixels (saves one convolution).
    return_variance : `bool`, optional
        Also return ``filtered_variance``.

    Returns
    -------
    filtered : `numpy.ndarray` (float32)
        ``sum(P * image)`` around each pixel: the PSF flux estimate times ``sum(P**2)``.
    snr : `numpy.ndarray` (float32)
        ``filtered / sqrt(sum(P**2 * variance))``; 0 where no pixel is usable.
    filtered_variance : `numpy.ndarray` (float32)
        Only with ``return_variance``.
    """
    result = filter_image(image, variance, kernel, bad, filtered_variance=filtered_variance)
    if return_variance:
        return result.filtered, result.snr, result.filtered_variance
    return result.filtered, result.snr


def find_peaks(
    snr: np.ndarray,
    threshold: float = 5.0,
    *,
    min_separation: int = 2,
    grow: int = 0,
    polarity: str = "both",
) -> Peaks:
    """Find footprints above ``threshold`` and the peaks inside them.

    Footprints are 8-connected sets of pixels with ``|snr| >= threshold`` (one
    set per polarity); a peak is a footprint pixel that no pixel within
    ``min_separation`` exceeds.  Only the pixels above the threshold are
    visited (`tasks.diffim.pixel_loops.find_peaks_sparse`).

    Parameters
    ----------
    snr : `numpy.ndarray`
        Significance image (from `psf_filter`).
    threshold : `float`, optional
        Detection threshold in sigma (applied to ``snr`` and ``-snr``).
    min_separation : `int`, optional
        A peak must be the maximum of ``|snr|`` within this many pixels.
    grow : `int`, optional
        Pixels added on every side of the footprint bounding boxes.
    polarity : {"both", "positive", "negative"}, optional
        Which footprints to look for.

    Returns
    -------
    peaks : `Peaks`
        Sorted by decreasing ``|snr|``.
    """
    if polarity not in ("both", "positive", "negative"):
        raise ValueError(f"polarity must be both, positive or negative, not {polarity!r}")
    signs = {"both": (1, -1), "positive": (1,), "negative": (-1,)}[polarity]
    height, width = snr.shape
    parts = []
    n_footprints = 0
    found = find_peaks_sparse(snr, threshold, int(min_separation), signs)
    for sign, (iy, ix, lab, boxes, n) in zip(signs, found, strict=True):
        if n == 0:
            continue
        box = boxes[lab].copy()
        box[:, 0] = np.maximum(box[:, 0] - grow, 0)
        box[:, 1] = np.maximum(box[:, 1] - grow, 0)
        box[:, 2] = np.minimum(box[:, 2] + grow, width - 1)
        box[:, 3] = np.minimum(box[:, 3] + grow, height - 1)
        parts.append(
            Peaks(
                ix.astype(np.int64),
                iy.astype(np.int64),
                snr[iy, ix].astype(np.float64),
                np.full(len(ix), sign, dtype=np.int8),
                (lab + 1 + n_footprints).astype(np.int64),
                box,
            )
        )
        n_footprints += n
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Peaks(
            empty, empty, np.zeros(0), np.zeros(0, np.int8), empty, np.zeros((0, 4), np.int64)
        )
    peaks = Peaks(*(np.concatenate([getattr(p, f) for p in parts]) for f in Peaks.__annotations__))
    order = np.argsort(-np.abs(peaks.snr), kind="stable")
    return peaks.select(order)


def refine_centroids(filtered: np.ndarray, peaks: Peaks) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centroids from the 3x3 neighbourhood of each peak.

    Fits a Gaussian (a parabola in ``log``) along each axis through the peak
    pixel and its two neighbours of the PSF-filtered image; where a neighbour
    is not of the peak's sign, falls back to a parabola in the values.

    Parameters
    ----------
    filtered : `numpy.ndarray`
        PSF-filtered image (from `psf_filter`).
    peaks : `Peaks`
        Peaks to refine.

    Returns
    -------
    x, y : `numpy.ndarray`
        Array coordinates (column, row) of the centroids.
    """
    height, width = filtered.shape
    ix = np.clip(peaks.ix, 1, width - 2)
    iy = np.clip(peaks.iy, 1, height - 2)
    sign = peaks.polarity.astype(np.float64)

    def offset(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        m, c, p = sign * minus, sign * centre, sign * plus
        positive = (m > 0) & (c > 0) & (p > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lm, lc, lp = (np.log(np.where(positive, v, 1.0)) for v in (m, c, p))
            log_fit = 0.5 * (lm - lp) / (lm - 2 * lc + lp)
            lin_fit = 0.5 * (m - p) / (m - 2 * c + p)
        result = np.where(positive, log_fit, lin_fit)
        return np.clip(np.nan_to_num(result), -1.0, 1.0)

    def f(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return filtered[rows, cols].astype(np.float64)

    dx = offset(f(iy, ix - 1), f(iy, ix), f(iy, ix + 1))
    dy = offset(f(iy - 1, ix), f(iy, ix), f(iy + 1, ix))
    return ix + dx, iy + dy
