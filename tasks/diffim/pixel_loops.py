"""Compiled per-pixel loops of difference imaging and detection (numba, ``nogil``).

* `find_peaks_sparse`: footprints (8-connected pixels with ``|snr|`` above
  the threshold) and their peaks, found from the few pixels above the
  threshold instead of full-image maximum filters and labelling: one pass
  over the image collects them, a union-find over their sorted positions
  labels the footprints, and each is tested against its neighbourhood.
* `dilate_box`: a boolean mask grown by a square (the maximum filter of a
  boolean image), in two passes that cost O(1) per pixel whatever the size.
* `add_stamps`: add scaled stamps into an image at given corners (PSF
  models, filtered models).
* `prepare_planes`, `significance`: the element-wise steps of the PSF
  filter, fused and split between threads by rows.
"""

from __future__ import annotations

import numba
import numpy as np

from tasks.core.threads import run_in_chunks

__all__ = [
    "add_stamps",
    "dilate_box",
    "find_peaks_sparse",
    "pixel_significance",
    "prepare_planes",
    "significance",
]


@numba.njit(cache=True, nogil=True)
def _collect(snr, threshold, want_pos, want_neg):  # pragma: no cover - compiled
    height, width = snr.shape
    n_pos = 0
    n_neg = 0
    for y in range(height):
        for x in range(width):
            v = snr[y, x]
            if want_pos and v >= threshold:
                n_pos += 1
            elif want_neg and v <= -threshold:
                n_neg += 1
    pos = np.empty(n_pos, dtype=np.int64)
    neg = np.empty(n_neg, dtype=np.int64)
    i = 0
    j = 0
    for y in range(height):
        for x in range(width):
            v = snr[y, x]
            if want_pos and v >= threshold:
                pos[i] = y * width + x
                i += 1
            elif want_neg and v <= -threshold:
                neg[j] = y * width + x
                j += 1
    return pos, neg


@numba.njit(cache=True, nogil=True)
def _find_root(parent, i):  # pragma: no cover - compiled
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@numba.njit(cache=True, nogil=True)
def _footprints(snr, hits, sign, min_sep):  # pragma: no cover - compiled
    """Label 8-connected hits (sorted flat indices) and find the peaks among them.

    Hits are grouped into runs along rows; runs of consecutive rows that
    touch (8-connectivity) are joined with a union-find, in one sweep.
    """
    height, width = snr.shape
    n = hits.size
    # runs: row, first and last column, first hit index
    run_row = np.empty(n, dtype=np.int64)
    run_x0 = np.empty(n, dtype=np.int64)
    run_x1 = np.empty(n, dtype=np.int64)
    run_start = np.empty(n + 1, dtype=np.int64)
    n_runs = 0
    for i in range(n):
        y = hits[i] // width
        x = hits[i] - y * width
        if n_runs > 0 and run_row[n_runs - 1] == y and run_x1[n_runs - 1] == x - 1:
            run_x1[n_runs - 1] = x
        else:
            run_row[n_runs] = y
            run_x0[n_runs] = x
            run_x1[n_runs] = x
            run_start[n_runs] = i
            n_runs += 1
    run_start[n_runs] = n
    parent = np.arange(n_runs)
    # sweep: runs of the previous row [p0, p1) against those of the current row
    p0 = 0
    p1 = 0
    r = 0
    while r < n_runs:
        y = run_row[r]
        r1 = r
        while r1 < n_runs and run_row[r1] == y:
            r1 += 1
        # previous-row runs are those of row y - 1 (if the last block was that row)
        if p1 > p0 and run_row[p0] != y - 1:
            p0 = p1
        q = p0
        for c in range(r, r1):
            while q < p1 and run_x1[q] < run_x0[c] - 1:
                q += 1
            k = q
            while k < p1 and run_x0[k] <= run_x1[c] + 1:
                a = _find_root(parent, c)
                b = _find_root(parent, k)
                if a != b:
                    if a < b:
                        parent[b] = a
                    else:
                        parent[a] = b
                k += 1
        p0 = r
        p1 = r1
        r = r1
    # labels 0..n_labels-1 in raster order of each footprint's first pixel
    label_of_root = np.full(n_runs, -1, dtype=np.int64)
    run_label = np.empty(n_runs, dtype=np.int64)
    n_labels = 0
    for i in range(n_runs):
        root = _find_root(parent, i)
        if label_of_root[root] < 0:
            label_of_root[root] = n_labels
            n_labels += 1
        run_label[i] = label_of_root[root]
    boxes = np.empty((n_labels, 4), dtype=np.int64)
    boxes[:, 0] = width
    boxes[:, 1] = height
    boxes[:, 2] = -1
    boxes[:, 3] = -1
    labels = np.empty(n, dtype=np.int64)
    is_peak = np.zeros(n, dtype=np.bool_)
    for i in range(n_runs):
        lab = run_label[i]
        y = run_row[i]
        boxes[lab, 0] = min(boxes[lab, 0], run_x0[i])
        boxes[lab, 1] = min(boxes[lab, 1], y)
        boxes[lab, 2] = max(boxes[lab, 2], run_x1[i])
        boxes[lab, 3] = max(boxes[lab, 3], y)
        for j in range(run_start[i], run_start[i + 1]):
            labels[j] = lab
            x = hits[j] - y * width
            value = sign * snr[y, x]
            peak = True
            for yy in range(max(y - min_sep, 0), min(y + min_sep + 1, height)):
                for xx in range(max(x - min_sep, 0), min(x + min_sep + 1, width)):
                    if sign * snr[yy, xx] > value:
                        peak = False
                        break
                if not peak:
                    break
            is_peak[j] = peak
    return labels, boxes, is_peak


def find_peaks_sparse(
    snr: np.ndarray, threshold: float, min_separation: int, polarities: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
    """Footprints and peaks of a significance image, per polarity.

    Parameters
    ----------
    snr : `numpy.ndarray`
        Significance image (float32).
    threshold : `float`
        Footprints are the pixels with ``sign * snr >= threshold``.
    min_separation : `int`
        A peak is a footprint pixel that no pixel within this Chebyshev
        distance exceeds (ties are all peaks).
    polarities : `tuple` of int
        ``(1,)``, ``(-1,)`` or ``(1, -1)``.

    Returns
    -------
    parts : `list`
        Per polarity, in the order given: ``(iy, ix, label, boxes, n_labels)``
        with ``label`` 0-based and ``boxes[label] = (x0, y0, x1, y1)`` inclusive.
    """
    snr = np.ascontiguousarray(snr)
    t = snr.dtype.type(threshold)
    pos, neg = _collect(snr, t, 1 in polarities, -1 in polarities)
    width = snr.shape[1]
    out = []
    for sign in polarities:
        hits = pos if sign > 0 else neg
        labels, boxes, is_peak = _footprints(snr, hits, float(sign), int(min_separation))
        peaks = hits[is_peak]
        out.append((peaks // width, peaks % width, labels[is_peak], boxes, len(boxes)))
    return out


@numba.njit(cache=True, nogil=True)
def _dilate_rows(mask, radius, out, has, start, stop):  # pragma: no cover - compiled
    width = mask.shape[1]
    for y in range(start, stop):
        first = -1
        for x in range(width):
            if mask[y, x]:
                first = x
                break
        has[y] = first >= 0
        if first < 0:
            continue
        last = -(radius + 1)
        for x in range(width):
            if mask[y, x]:
                last = x
            out[y, x] = x - last <= radius
        nxt = width + radius + 1
        for x in range(width - 1, -1, -1):
            if mask[y, x]:
                nxt = x
            if nxt - x <= radius:
                out[y, x] = True


@numba.njit(cache=True, nogil=True)
def _dilate_cols(rows, has, radius, out, start, stop):  # pragma: no cover - compiled
    """OR of ``rows[y - radius : y + radius + 1]`` into ``out[y]`` for y in [start, stop)."""
    height, width = rows.shape
    count = np.zeros(width, dtype=np.int32)
    n_rows = 0  # rows with set pixels in the window
    lo = max(start - radius, 0)
    hi = min(start + radius, height - 1)
    for y in range(lo, hi + 1):
        if has[y]:
            n_rows += 1
            for x in range(width):
                count[x] += rows[y, x]
    for y in range(start, stop):
        if n_rows > 0:
            for x in range(width):
                out[y, x] = count[x] > 0
        # slide the window: drop row y - radius, add row y + radius + 1
        gone = y - radius
        if gone >= 0 and has[gone]:
            n_rows -= 1
            for x in range(width):
                count[x] -= rows[gone, x]
        come = y + radius + 1
        if come < height and has[come]:
            n_rows += 1
            for x in range(width):
                count[x] += rows[come, x]


def dilate_box(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a ``(2 radius + 1)`` square.

    Equal to ``scipy.ndimage.maximum_filter(mask, size=2 * radius + 1)``;
    rows far from every set pixel cost one read.
    """
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    radius = int(radius)
    if radius <= 0 or not mask.any():
        return mask.copy()
    rows = np.zeros_like(mask)
    has = np.zeros(mask.shape[0], dtype=np.bool_)
    run_in_chunks(lambda a, b: _dilate_rows(mask, radius, rows, has, a, b), mask.shape[0])
    out = np.zeros_like(mask)
    run_in_chunks(lambda a, b: _dilate_cols(rows, has, radius, out, a, b), mask.shape[0])
    return out


@numba.njit(cache=True, nogil=True)
def add_stamps(image, stamps, x0, y0, scale):  # pragma: no cover - compiled
    """Add ``scale * stamps[i]`` to ``image`` with corner ``(x0[i], y0[i])``, clipped."""
    height, width = image.shape
    k0, k1 = stamps.shape[1], stamps.shape[2]
    for i in range(stamps.shape[0]):
        for j in range(k0):
            y = y0[i] + j
            if y < 0 or y >= height:
                continue
            for k in range(k1):
                x = x0[i] + k
                if 0 <= x < width:
                    image[y, x] += scale * stamps[i, j, k]


@numba.njit(cache=True, nogil=True)
def _prepare(
    image, variance, bad, mask, bits, img_out, var_out, unusable, start, stop
):  # pragma: no cover - compiled
    width = image.shape[1]
    for y in range(start, stop):
        for x in range(width):
            v = variance[y, x]
            d = image[y, x]
            skip = bad[y, x] or (mask[y, x] & bits) != 0
            skip = skip or not (np.isfinite(d) and np.isfinite(v) and v > 0)
            unusable[y, x] = skip
            img_out[y, x] = 0.0 if skip else d
            var_out[y, x] = 0.0 if skip else v


def prepare_planes(
    image: np.ndarray,
    variance: np.ndarray,
    bad: np.ndarray | None,
    mask: np.ndarray | None = None,
    bits: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero the unusable pixels of an image and its variance (float32 copies).

    Unusable: ``bad``, or any of ``bits`` set in ``mask``, or a non-finite
    value, or a variance that is not finite and positive.

    Returns
    -------
    image, variance : `numpy.ndarray` (float32)
    unusable : `numpy.ndarray` of bool
    """
    shape = image.shape
    if bad is None:
        bad = np.zeros(shape, dtype=np.bool_)
    if mask is None:
        mask = np.zeros(shape, dtype=np.uint32)
        bits = 0
    img_out = np.empty(shape, dtype=np.float32)
    var_out = np.empty(shape, dtype=np.float32)
    unusable = np.empty(shape, dtype=np.bool_)
    image, variance = np.ascontiguousarray(image), np.ascontiguousarray(variance)
    bad = np.ascontiguousarray(bad, dtype=np.bool_)
    mask = np.ascontiguousarray(mask)
    bits = mask.dtype.type(bits)
    run_in_chunks(
        lambda a, b: _prepare(image, variance, bad, mask, bits, img_out, var_out, unusable, a, b),
        shape[0],
    )
    return img_out, var_out, unusable


@numba.njit(cache=True, nogil=True)
def _ratio(filtered, fvar, floor, unusable, inv_sd, snr, start, stop):  # pragma: no cover
    width = filtered.shape[1]
    for y in range(start, stop):
        for x in range(width):
            v = fvar[y, x]
            w = np.float32(0.0)
            if v > floor and not unusable[y, x]:
                w = np.float32(1.0 / np.sqrt(v))
            inv_sd[y, x] = w
            snr[y, x] = filtered[y, x] * w


def significance(
    filtered: np.ndarray, filtered_variance: np.ndarray, floor: float, unusable: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``filtered / sqrt(filtered_variance)`` and the ``1 / sqrt`` factor.

    Both are 0 where the variance is at or below ``floor`` or the pixel is unusable.
    """
    inv_sd = np.empty(filtered.shape, dtype=np.float32)
    snr = np.empty(filtered.shape, dtype=np.float32)
    run_in_chunks(
        lambda a, b: _ratio(
            filtered, filtered_variance, np.float32(floor), unusable, inv_sd, snr, a, b
        ),
        filtered.shape[0],
    )
    return snr, inv_sd


@numba.njit(cache=True, nogil=True)
def _pixel_snr(image, variance, unusable, out, start, stop):  # pragma: no cover - compiled
    width = image.shape[1]
    for y in range(start, stop):
        for x in range(width):
            v = variance[y, x]
            d = image[y, x]
            if unusable[y, x] or not (v > 0 and np.isfinite(v) and np.isfinite(d)):
                out[y, x] = 0.0
            else:
                out[y, x] = d / np.sqrt(v)


def pixel_significance(image: np.ndarray, variance: np.ndarray, unusable: np.ndarray) -> np.ndarray:
    """Return ``image / sqrt(variance)`` (float32), 0 where unusable or undefined."""
    out = np.empty(image.shape, dtype=np.float32)
    image, variance = np.ascontiguousarray(image), np.ascontiguousarray(variance)
    unusable = np.ascontiguousarray(unusable, dtype=np.bool_)
    run_in_chunks(lambda a, b: _pixel_snr(image, variance, unusable, out, a, b), image.shape[0])
    return out
