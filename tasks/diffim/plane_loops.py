"""Compiled element-wise passes of the subtraction (numba, ``nogil``, rows split between threads).

Each function replaces a chain of full-image numpy expressions (one
temporary array per step) with one pass over the pixels:

* `prepare_template`: the template in science units with its missing pixels
  (non-finite or ``NO_DATA``) zeroed, and its variance;
* `science_on_template_grid`: the science image and variance on the
  template's larger grid, and the pixels a kernel-fit stamp may use;
* `assemble_difference`: science minus matched template, their summed
  variance, the mask, and the matched template cut to the science box, with
  the pixels the convolution could not fill set to NaN / ``NO_DATA``.
"""

from __future__ import annotations

import numba
import numpy as np

from tasks.core.threads import run_in_chunks

__all__ = ["assemble_difference", "prepare_template", "science_on_template_grid"]


@numba.njit(cache=True, nogil=True)
def _prepare_template(
    image, variance, mask, no_data, scale, img_out, var_out, missing, start, stop
):  # pragma: no cover - compiled
    width = image.shape[1]
    scale2 = scale * scale
    n_nonpositive = 0
    for y in range(start, stop):
        for x in range(width):
            d = np.float32(image[y, x]) * scale
            v = np.float32(variance[y, x]) * scale2
            miss = (mask[y, x] & no_data) != 0 or not np.isfinite(d)
            missing[y, x] = miss
            if miss:
                img_out[y, x] = 0.0
                var_out[y, x] = 0.0
            else:
                img_out[y, x] = d
                if np.isfinite(v):
                    var_out[y, x] = v
                    if v <= 0:
                        n_nonpositive += 1
                else:
                    var_out[y, x] = 0.0
                    n_nonpositive += 1
    return n_nonpositive


def prepare_template(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray, no_data: int, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Template image and variance times ``scale`` (and ``scale**2``), missing pixels zeroed.

    Returns
    -------
    image, variance : `numpy.ndarray` (float32)
        Zero where missing (non-finite image or ``no_data`` mask bits); the
        variance is also zero where it is not finite.
    missing : `numpy.ndarray` of bool
    n_unusable : `int`
        Pixels that are not missing but whose variance is not finite and positive.
    """
    shape = image.shape
    img_out = np.empty(shape, dtype=np.float32)
    var_out = np.empty(shape, dtype=np.float32)
    missing = np.empty(shape, dtype=np.bool_)
    counts = []
    image, variance, mask = (np.ascontiguousarray(a) for a in (image, variance, mask))
    bits = mask.dtype.type(no_data)

    def chunk(a: int, b: int) -> None:
        counts.append(
            _prepare_template(
                image, variance, mask, bits, np.float32(scale), img_out, var_out, missing, a, b
            )
        )

    run_in_chunks(chunk, shape[0])
    return img_out, var_out, missing, int(sum(counts))


@numba.njit(cache=True, nogil=True)
def _science_grid(
    image, variance, mask, bad_bits, t_missing, y0, x0, img_out, var_out, usable, start, stop
):  # pragma: no cover - compiled
    height, width = image.shape
    big_width = img_out.shape[1]
    for y in range(start, stop):
        sy = y - y0
        for x in range(big_width):
            sx = x - x0
            if 0 <= sy < height and 0 <= sx < width:
                d = image[sy, sx]
                v = variance[sy, sx]
                ok = np.isfinite(d) and (mask[sy, sx] & bad_bits) == 0
                img_out[y, x] = d if np.isfinite(d) else 0.0
                var_out[y, x] = v if np.isfinite(v) else 1e30
                usable[y, x] = ok and np.isfinite(v) and not t_missing[y, x]
            else:
                img_out[y, x] = 0.0
                var_out[y, x] = 1e30
                usable[y, x] = False


def science_on_template_grid(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    bad_bits: int,
    t_missing: np.ndarray,
    offset: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Science planes on the template's grid, for the kernel-fit stamps.

    Parameters
    ----------
    image, variance, mask : `numpy.ndarray`
        Science planes.
    bad_bits : `int`
        Mask bits that make a science pixel unusable.
    t_missing : `numpy.ndarray` of bool
        Missing template pixels (template grid).
    offset : `tuple` of int
        ``(y0, x0)``: template-grid position of the science image's first pixel.

    Returns
    -------
    image, variance : `numpy.ndarray` (float32)
        Zero (image) and 1e30 (variance) outside the science box and where
        not finite.
    usable : `numpy.ndarray` of bool
        Finite, unmasked science pixels whose template pixel is not missing.
    """
    shape = t_missing.shape
    img_out = np.empty(shape, dtype=np.float32)
    var_out = np.empty(shape, dtype=np.float32)
    usable = np.empty(shape, dtype=np.bool_)
    image, variance, mask = (np.ascontiguousarray(a) for a in (image, variance, mask))
    bits = mask.dtype.type(bad_bits)
    y0, x0 = offset
    run_in_chunks(
        lambda a, b: _science_grid(
            image, variance, mask, bits, t_missing, y0, x0, img_out, var_out, usable, a, b
        ),
        shape[0],
    )
    return img_out, var_out, usable


@numba.njit(cache=True, nogil=True)
def _assemble(
    sci_img,
    sci_var,
    sci_mask,
    matched,
    matched_var,
    grown_missing,
    y0,
    x0,
    no_data,
    diff,
    diff_var,
    mask_out,
    m_img,
    m_var,
    m_mask,
    start,
    stop,
):  # pragma: no cover - compiled
    width = sci_img.shape[1]
    nan = np.float32(np.nan)
    for y in range(start, stop):
        ty = y + y0
        for x in range(width):
            tx = x + x0
            if grown_missing[ty, tx]:
                diff[y, x] = nan
                diff_var[y, x] = nan
                mask_out[y, x] = sci_mask[y, x] | no_data
                m_img[y, x] = nan
                m_var[y, x] = nan
                m_mask[y, x] = no_data
            else:
                mv = max(matched_var[ty, tx], np.float32(0.0))
                mi = matched[ty, tx]
                diff[y, x] = sci_img[y, x] - mi
                diff_var[y, x] = sci_var[y, x] + mv
                mask_out[y, x] = sci_mask[y, x]
                m_img[y, x] = mi
                m_var[y, x] = mv
                m_mask[y, x] = 0


def assemble_difference(
    science_image: np.ndarray,
    science_variance: np.ndarray,
    science_mask: np.ndarray,
    matched: np.ndarray,
    matched_variance: np.ndarray,
    grown_missing: np.ndarray,
    offset: tuple[int, int],
    no_data: int,
) -> tuple[np.ndarray, ...]:
    """Difference image planes and the matched template on the science box.

    Parameters
    ----------
    science_image, science_variance, science_mask : `numpy.ndarray`
        Science planes.
    matched, matched_variance : `numpy.ndarray`
        Matched template and its variance on the template grid.
    grown_missing : `numpy.ndarray` of bool
        Template-grid pixels the convolution could not fill.
    offset : `tuple` of int
        ``(y0, x0)``: template-grid position of the science image's first pixel.
    no_data : `int`
        The ``NO_DATA`` mask bit.

    Returns
    -------
    diff, diff_var, mask : `numpy.ndarray`
        Difference image (float32, NaN where missing), variance
        (``V_sci + max(V_matched, 0)``), science mask with ``NO_DATA`` added.
    m_img, m_var, m_mask : `numpy.ndarray`
        Matched template on the science box (NaN / ``NO_DATA`` where missing).
    """
    shape = science_image.shape
    diff = np.empty(shape, dtype=np.float32)
    diff_var = np.empty(shape, dtype=np.float32)
    m_img = np.empty(shape, dtype=np.float32)
    m_var = np.empty(shape, dtype=np.float32)
    mask_out = np.empty(shape, dtype=science_mask.dtype)
    m_mask = np.empty(shape, dtype=science_mask.dtype)
    planes = [
        np.ascontiguousarray(a)
        for a in (science_image, science_variance, science_mask, matched, matched_variance)
    ]
    bit = science_mask.dtype.type(no_data)
    y0, x0 = offset
    run_in_chunks(
        lambda a, b: _assemble(
            *planes,
            grown_missing,
            y0,
            x0,
            bit,
            diff,
            diff_var,
            mask_out,
            m_img,
            m_var,
            m_mask,
            a,
            b,
        ),
        shape[0],
    )
    return diff, diff_var, mask_out, m_img, m_var, m_mask
