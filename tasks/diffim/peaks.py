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
from scipy import ndimage, signal

__all__ = ["Peaks", "psf_filter", "find_peaks", "refine_centroids"]


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


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # overlap-add FFT convolution: O(N log k) and the same size as the input
    return signal.oaconvolve(image, kernel, mode="same")


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
    kernel = np.asarray(kernel, dtype=np.float64)
    kernel = kernel / kernel.sum()
    unusable = ~(np.isfinite(image) & np.isfinite(variance) & (variance > 0))
    if bad is not None:
        unusable |= bad
    img = np.where(unusable, np.float32(0.0), image).astype(np.float32, copy=False)
    flipped = kernel[::-1, ::-1]  # correlation = convolution with the flipped kernel
    filtered = _convolve(img, flipped.astype(np.float32)).astype(np.float32, copy=False)
    if filtered_variance is None:
        var = np.where(unusable, np.float32(0.0), variance).astype(np.float32, copy=False)
        filtered_variance = _convolve(var, (flipped**2).astype(np.float32)).astype(
            np.float32, copy=False
        )
    # FFT round-off leaves tiny non-zero variances where everything is masked
    sample = variance[::7, ::7][~unusable[::7, ::7]]
    floor = 1e-6 * float(np.median(sample)) * float((kernel**2).sum()) if sample.size else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(
            filtered_variance > floor, filtered / np.sqrt(filtered_variance), np.float32(0.0)
        ).astype(np.float32, copy=False)
    snr[unusable] = 0.0
    if return_variance:
        return filtered, snr, filtered_variance
    return filtered, snr


def find_peaks(
    snr: np.ndarray,
    threshold: float = 5.0,
    *,
    min_separation: int = 2,
    grow: int = 0,
    polarity: str = "both",
) -> Peaks:
    """Find footprints above ``threshold`` and the peaks inside them.

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
    size = 2 * int(min_separation) + 1
    structure = np.ones((3, 3), dtype=bool)
    parts = []
    n_footprints = 0
    height, width = snr.shape
    for sign in signs:
        signed = snr if sign > 0 else -snr
        above = signed >= threshold
        labels, n = ndimage.label(above, structure=structure)
        if n == 0:
            continue
        local_max = ndimage.maximum_filter(signed, size=size, mode="nearest")
        is_peak = above & (signed == local_max)
        iy, ix = np.nonzero(is_peak)
        lab = labels[iy, ix]
        slices = ndimage.find_objects(labels)
        boxes = np.array(
            [(s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1) for s in slices], dtype=np.int64
        )
        box = boxes[lab - 1]
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
                (lab + n_footprints).astype(np.int64),
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

    f = filtered.astype(np.float64)
    dx = offset(f[iy, ix - 1], f[iy, ix], f[iy, ix + 1])
    dy = offset(f[iy - 1, ix], f[iy, ix], f[iy + 1, ix])
    return ix + dx, iy + dy
