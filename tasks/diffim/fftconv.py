"""Same-size FFT convolutions of large images, tile by tile (overlap-save).

A 4k x 4k image convolved with a kernel of a few tens of pixels is fastest
cut into tiles of a few hundred pixels with a halo of the kernel's
half-width: each tile's transform fits in the CPU caches, and the rows of
tiles are shared between threads (the transforms and products release the
GIL).
`TiledSpectrum` keeps the forward transforms of the tiles, so one image
is transformed once and convolved with as many kernels as wanted, each
costing one product and one inverse transform.  Spatially varying kernels
that are linear combinations ``sum_j w_j(x, y) K_j`` with separable weights
``w_j(x, y) = wx_j(x) wy_j(y)`` are exact by linearity:
``sum_j w_j (image ⊗ K_j)``.

Outside the image the input is taken as zero (the ``mode="same"`` output of
`scipy.signal.fftconvolve`).  Arithmetic is float32/complex64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import fft as sp_fft

from tasks.core.threads import thread_count

__all__ = ["TiledSpectrum", "convolve_same"]


def _plan(height: int, width: int, halo: int) -> tuple[int, int]:
    """Choose the tile size ``t`` and transform size ``n >= t + 2 halo`` (fast length).

    Minimises the transform work ``tiles * n**2 * log(n)``; tiles of a few
    hundred pixels also keep each transform in cache.
    """
    largest = sp_fft.next_fast_len(max(height, width) + 2 * halo, real=True)
    best: tuple[float, int, int] | None = None
    for n in range(max(64, 2 * halo + 16), min(largest, 640) + 1):
        if sp_fft.next_fast_len(n, real=True) != n:
            continue
        t = n - 2 * halo
        tiles = math.ceil(height / t) * math.ceil(width / t)
        cost = tiles * n * n * math.log2(n) * (1.0 + 0.15 * (n > 512))
        if best is None or cost < best[0]:
            best = (cost, t, n)
    if best is None or largest <= 640:
        n = largest
        single = (n * n * math.log2(n), n - 2 * halo, n)
        if best is None or single[0] <= best[0]:
            best = single
    return best[1], best[2]


class TiledSpectrum:
    """Forward FFTs of the overlapping tiles of an image, reusable for several kernels.

    Rows of tiles are processed by a pool of threads (the transforms and the
    element-wise products release the GIL), one transform thread each.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-d image (finite values; converted to float32).
    halo : `int`
        Largest kernel half-width that will be applied.
    workers : `int`, optional
        Threads (default: the cores this process may use).
    """

    def __init__(self, image: np.ndarray, halo: int, workers: int | None = None) -> None:
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"need a 2-d image, got shape {image.shape}")
        self.shape = image.shape
        self.halo = int(max(halo, 0))
        self.workers = workers or thread_count()
        height, width = self.shape
        self.tile, self.n = _plan(height, width, self.halo)
        t, h, n = self.tile, self.halo, self.n
        self.ny, self.nx = math.ceil(height / t), math.ceil(width / t)
        padded = np.zeros((self.ny * t + 2 * h, self.nx * t + 2 * h), dtype=np.float32)
        padded[h : h + height, h : h + width] = image
        s0, s1 = padded.strides
        tiles = np.lib.stride_tricks.as_strided(
            padded, (self.ny, self.nx, t + 2 * h, t + 2 * h), (s0 * t, s1 * t, s0, s1)
        )
        self.spectrum = np.empty((self.ny, self.nx, n, n // 2 + 1), dtype=np.complex64)

        def forward(row: int) -> None:
            self.spectrum[row] = sp_fft.rfft2(tiles[row], s=(n, n), workers=1)

        self._map_rows(forward)

    def _map_rows(self, func) -> None:
        """Call ``func(row)`` for every row of tiles, on the thread pool."""
        if self.workers <= 1 or self.ny == 1:
            for row in range(self.ny):
                func(row)
            return
        with ThreadPoolExecutor(min(self.workers, self.ny)) as pool:
            for future in [pool.submit(func, row) for row in range(self.ny)]:
                future.result()

    def kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """Transform of a kernel centred on the origin of a tile (``(n, n // 2 + 1)``)."""
        kernel = np.asarray(kernel, dtype=np.float32)
        k0, k1 = kernel.shape
        if k0 % 2 == 0 or k1 % 2 == 0:
            raise ValueError(f"kernels must have odd sizes, got {kernel.shape}")
        if max(k0, k1) // 2 > self.halo:
            raise ValueError(f"kernel {kernel.shape} is wider than the halo {self.halo}")
        placed = np.zeros((self.n, self.n), dtype=np.float32)
        rows = (np.arange(k0) - k0 // 2) % self.n
        cols = (np.arange(k1) - k1 // 2) % self.n
        placed[np.ix_(rows, cols)] = kernel
        return sp_fft.rfft2(placed)

    def convolve(self, kernel: np.ndarray) -> np.ndarray:
        """Return ``image ⊗ kernel`` (same size as the image, float32)."""
        return self.convolve_terms([kernel], [None], [None])

    def correlate(self, kernel: np.ndarray) -> np.ndarray:
        """Return the correlation of the image with ``kernel`` (same size, float32)."""
        return self.convolve(np.asarray(kernel)[::-1, ::-1])

    def convolve_terms(
        self,
        kernels: Sequence[np.ndarray],
        x_weights: Sequence[np.ndarray | None],
        y_weights: Sequence[np.ndarray | None],
    ) -> np.ndarray:
        """Return ``sum_j wx_j(x) wy_j(y) (image ⊗ kernels[j])``.

        Parameters
        ----------
        kernels : sequence of `numpy.ndarray`
            Odd-sized kernels, no wider than the halo.
        x_weights, y_weights : sequence of `numpy.ndarray` or `None`
            Per kernel, weights along the columns (length = image width) and
            rows (length = image height); `None` is a weight of 1.
        """
        t, h, n = self.tile, self.halo, self.n
        height, width = self.shape
        spectra = [self.kernel_spectrum(k) for k in kernels]
        wxs, wys = [], []
        for wx, wy in zip(x_weights, y_weights, strict=True):
            if wx is not None:
                full = np.zeros(self.nx * t, dtype=np.float32)
                full[:width] = wx
                wx = full.reshape(self.nx, 1, t)
            if wy is not None:
                full = np.zeros(self.ny * t, dtype=np.float32)
                full[:height] = wy
                wy = full.reshape(self.ny, t, 1)
            wxs.append(wx)
            wys.append(wy)
        out = np.empty(self.shape, dtype=np.float32)

        def inverse(row: int) -> None:
            total = None
            for spectrum, wx, wy in zip(spectra, wxs, wys, strict=True):
                product = self.spectrum[row] * spectrum
                part = sp_fft.irfft2(product, s=(n, n), workers=1, overwrite_x=True)
                part = part[:, h : h + t, h : h + t]
                if wx is not None:
                    part = part * wx
                if wy is not None:
                    part = part * wy[row]
                if total is None:
                    total = np.array(part, dtype=np.float32)
                else:
                    total += part
            y0 = row * t
            rows = min(t, height - y0)
            for col in range(self.nx):
                x0 = col * t
                cols = min(t, width - x0)
                out[y0 : y0 + rows, x0 : x0 + cols] = total[col, :rows, :cols]

        self._map_rows(inverse)
        return out


def convolve_same(image: np.ndarray, kernel: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Return ``image ⊗ kernel`` with the image's size (zero outside), float32."""
    kernel = np.asarray(kernel)
    halo = max(kernel.shape) // 2
    return TiledSpectrum(image, halo, workers).convolve(kernel)
