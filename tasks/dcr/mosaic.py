"""Inverse-sigma weighted mosaic of warped patch templates (compiled, one pass per patch).

Each warped patch adds ``w * image``, ``w`` and one count to every pixel it
covers with a finite image and a positive variance, with ``w = V**-1/2``
(the DCR template convention).  The mosaic is ``sum(w * image) / sum(w)``,
and its variance ``sum(w**2 V) / sum(w)**2 = n / sum(w)**2`` because
``w**2 V = 1``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tasks.core.threads import run_in_chunks

__all__ = ["Mosaic"]


@numba.njit(cache=True, nogil=True)
def _accumulate(
    image, variance, mask, scale, num, den, count, mask_out, row0, row1
):  # pragma: no cover
    width = image.shape[1]
    covered = 0
    for i in range(row0, row1):
        for j in range(width):
            v = variance[i, j] * scale * scale
            x = image[i, j] * scale
            if v > 0.0 and math.isfinite(v) and math.isfinite(x):
                w = 1.0 / math.sqrt(v)
                num[i, j] += w * x
                den[i, j] += w
                count[i, j] += 1
                mask_out[i, j] |= mask[i, j]
                covered += 1
    return covered


@numba.njit(cache=True, nogil=True)
def _finish(
    num, den, count, mask_out, no_data_bit, image, variance, row0, row1
):  # pragma: no cover
    width = num.shape[1]
    for i in range(row0, row1):
        for j in range(width):
            if den[i, j] > 0.0:
                image[i, j] = num[i, j] / den[i, j]
                variance[i, j] = count[i, j] / (den[i, j] * den[i, j])
            else:
                image[i, j] = np.nan
                variance[i, j] = np.nan
                mask_out[i, j] |= no_data_bit


class Mosaic:
    """Accumulate warped planes on one pixel grid.

    Parameters
    ----------
    shape : `tuple` [`int`, `int`]
        ``(height, width)`` of the grid.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self._num = np.zeros(shape, dtype=np.float64)
        self._den = np.zeros(shape, dtype=np.float64)
        self._count = np.zeros(shape, dtype=np.int32)
        self.mask = np.zeros(shape, dtype=np.uint32)

    def add(
        self, image: np.ndarray, variance: np.ndarray, mask: np.ndarray, scale: float = 1.0
    ) -> int:
        """Add one warped patch (fluxes multiplied by ``scale``).

        Parameters
        ----------
        image, variance : `numpy.ndarray`
            Warped planes on the grid; pixels with a non-finite value or a
            variance that is not positive are skipped.
        mask : `numpy.ndarray`
            Warped mask bits, ORed into the mosaic where the patch is used.
        scale : `float`, optional
            Flux scale of this patch relative to the mosaic's calibration.

        Returns
        -------
        covered : `int`
            Number of pixels this patch contributed to.
        """
        planes = (
            np.asarray(image, dtype=np.float32),
            np.asarray(variance, dtype=np.float32),
            np.asarray(mask, dtype=np.uint32),
            float(scale),
            self._num,
            self._den,
            self._count,
            self.mask,
        )
        covered: list[int] = []
        run_in_chunks(lambda a, b: covered.append(_accumulate(*planes, a, b)), image.shape[0])
        return int(sum(covered))

    def finish(self, no_data_bit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted mean image, its variance, and the mask.

        Parameters
        ----------
        no_data_bit : `int`
            Set (with NaN image and variance) where no patch contributed.

        Returns
        -------
        image, variance : `numpy.ndarray` (float32)
        mask : `numpy.ndarray` (uint32)
        """
        image = np.empty(self._num.shape, dtype=np.float32)
        variance = np.empty(self._num.shape, dtype=np.float32)
        planes = (self._num, self._den, self._count, self.mask, np.uint32(no_data_bit))
        run_in_chunks(lambda a, b: _finish(*planes, image, variance, a, b), image.shape[0])
        return image, variance, self.mask

    @property
    def covered_fraction(self) -> float:
        """Fraction of the grid covered by at least one patch."""
        return float(np.count_nonzero(self._count) / self._count.size)
