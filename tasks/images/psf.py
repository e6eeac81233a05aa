"""Point-spread-function models.

`Psf` is the interface every PSF implements (the fitted pixel-grid PSF of the
final characterization included).  Kernel images are odd squares normalised
to sum 1.  ``compute_image(x, y)`` draws the PSF centred at the sub-pixel
offset of ``(x, y)`` from the kernel's central pixel, which corresponds to
the parent pixel ``(round(x), round(y))`` (``round`` means ``floor(v + 0.5)``
here, not banker's rounding); ``compute_kernel_image(x, y)`` draws the PSF of
position ``(x, y)`` centred exactly on the central pixel.

Concrete models: `GaussianPsf` and `DoubleGaussianPsf` (whose core width
varies smoothly over the detector; the simulator's PSF).  Both integrate
the profile over each pixel (error functions), so a kernel is what a
detector with square pixels records.  Every class is registered for FITS
persistence (`psf_to_hdu` / `psf_from_hdu`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from astropy.io import fits
from scipy import ndimage
from scipy.special import erf

from tasks.images.errors import ImageError
from tasks.images.geom import Box2I
from tasks.images.persistence import (
    object_from_hdu,
    object_to_hdu,
    params_from_hdu,
    params_to_hdu,
    register_persistable,
)

__all__ = [
    "Psf",
    "GaussianPsf",
    "DoubleGaussianPsf",
    "psf_to_hdu",
    "psf_from_hdu",
    "nearest_pixel",
]


def nearest_pixel(v: float | np.ndarray) -> np.ndarray:
    """Return the integer pixel containing ``v`` (``floor(v + 0.5)``), as int64."""
    return np.floor(np.asarray(v, dtype=float) + 0.5).astype(np.int64)


class Psf(ABC):
    """A point-spread function that may vary over the image.

    Subclasses implement `kernel_size`, `compute_kernel_image` and
    `compute_shape`; they should override `compute_image` (the default shifts
    the kernel image with a cubic spline) and `compute_images` (the default
    loops) with exact or vectorised versions when they can.  To be stored in
    an exposure's FITS file a subclass also defines ``persistence_name``,
    ``to_hdu`` and ``from_hdu`` and is decorated with
    `tasks.images.register_persistable`.
    """

    @property
    @abstractmethod
    def kernel_size(self) -> int:
        """Width (= height, odd) of the kernel images in pixels."""

    @abstractmethod
    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF at position ``(x, y)`` centred on the kernel's central pixel.

        Parameters
        ----------
        x, y : `float`
            Parent pixel position at which the PSF model is evaluated.

        Returns
        -------
        kernel : `numpy.ndarray`
            ``(kernel_size, kernel_size)`` float64 array summing to 1.
        """

    @abstractmethod
    def compute_shape(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple:
        """Return the second moments ``(ixx, iyy, ixy)`` in pixels² at ``(x, y)``."""

    def compute_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF centred at the sub-pixel offset of ``(x, y)``.

        The kernel's central pixel corresponds to parent pixel
        ``(round(x), round(y))``; the PSF centre lies at
        ``(x - round(x), y - round(y))`` from it.  The image sums to 1.
        """
        kernel = self.compute_kernel_image(x, y)
        dx = float(x - nearest_pixel(x))
        dy = float(y - nearest_pixel(y))
        if dx == 0.0 and dy == 0.0:
            return kernel
        shifted = ndimage.shift(kernel, (dy, dx), order=3, mode="constant", cval=0.0)
        return shifted / shifted.sum()

    def compute_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorised `compute_image`: an ``(n, k, k)`` stack for ``n`` positions."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        k = self.kernel_size
        out = np.empty((x.size, k, k))
        for n, (xx, yy) in enumerate(zip(x, y, strict=True)):
            out[n] = self.compute_image(xx, yy)
        return out

    def sigma(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray | float:
        """Gaussian-equivalent width in pixels: ``sqrt((ixx + iyy) / 2)``."""
        ixx, iyy, _ = self.compute_shape(x, y)
        return np.sqrt((np.asarray(ixx) + np.asarray(iyy)) / 2.0)

    def stamp_box(self, x: float, y: float) -> Box2I:
        """Return the parent-pixel box covered by ``compute_image(x, y)``."""
        half = self.kernel_size // 2
        return Box2I(
            int(nearest_pixel(x)) - half,
            int(nearest_pixel(y)) - half,
            self.kernel_size,
            self.kernel_size,
        )


def _pixel_integrated_gaussian(
    offset: np.ndarray, sigma: np.ndarray, kernel_size: int
) -> np.ndarray:
    """Return ``(n, k)`` 1-D profiles of unit Gaussians integrated over pixels.

    Profile ``n`` is centred at ``offset[n]`` pixels from the central pixel
    and has width ``sigma[n]``.
    """
    half = kernel_size // 2
    edges = np.arange(-half - 0.5, half + 1.0, 1.0)  # k + 1 pixel edges
    scaled = (edges[None, :] - offset[:, None]) / (np.sqrt(2.0) * sigma[:, None])
    return 0.5 * np.diff(erf(scaled), axis=1)


def _odd_size(radius: float) -> int:
    return 2 * int(math.ceil(radius)) + 1


@register_persistable
class GaussianPsf(Psf):
    """A circular Gaussian PSF, the same everywhere.

    Parameters
    ----------
    sigma : `float`
        Gaussian width in pixels.
    kernel_size : `int`, optional
        Odd kernel width; defaults to ``2 * ceil(5 * sigma) + 1``.
    """

    persistence_name = "GaussianPsf"

    def __init__(self, sigma: float, kernel_size: int | None = None) -> None:
        if not np.isfinite(sigma) or sigma <= 0:
            raise ImageError(f"GaussianPsf sigma must be positive, got {sigma}")
        self._sigma = float(sigma)
        self._kernel_size = _odd_size(5 * self._sigma) if kernel_size is None else kernel_size
        if self._kernel_size % 2 != 1 or self._kernel_size < 3:
            raise ImageError(f"kernel_size must be odd and >= 3, got {self._kernel_size}")

    @property
    def kernel_size(self) -> int:
        """Width of the kernel images in pixels."""
        return self._kernel_size

    @property
    def width(self) -> float:
        """The Gaussian sigma in pixels."""
        return self._sigma

    def compute_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorised `compute_image`: an ``(n, k, k)`` stack."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        sig = np.full(x.shape, self._sigma)
        gx = _pixel_integrated_gaussian(x - nearest_pixel(x), sig, self._kernel_size)
        gy = _pixel_integrated_gaussian(y - nearest_pixel(y), sig, self._kernel_size)
        out = gy[:, :, None] * gx[:, None, :]
        return out / out.sum(axis=(1, 2), keepdims=True)

    def compute_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF centred at the sub-pixel offset of ``(x, y)``."""
        return self.compute_images(np.array([x]), np.array([y]))[0]

    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF centred on the central pixel."""
        return self.compute_images(np.array([0.0]), np.array([0.0]))[0]

    def compute_shape(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple:
        """Return ``(ixx, iyy, ixy)`` of the continuous profile (``sigma², sigma², 0``)."""
        ones = np.ones(np.broadcast(np.asarray(x), np.asarray(y)).shape)
        s2 = self._sigma**2 * ones
        return (s2, s2.copy(), 0.0 * ones)

    def to_hdu(self) -> fits.ImageHDU:
        """Return the model as a FITS HDU."""
        return params_to_hdu({"sigma": self._sigma, "kernel_size": self._kernel_size})

    @classmethod
    def from_hdu(cls, hdu: fits.ImageHDU) -> GaussianPsf:
        """Rebuild the model from `to_hdu`'s output."""
        p = params_from_hdu(hdu)
        return cls(p["sigma"], int(p["kernel_size"]))

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, GaussianPsf)
            and other._sigma == self._sigma
            and other._kernel_size == self._kernel_size
        )

    def __repr__(self) -> str:
        return f"GaussianPsf(sigma={self._sigma}, kernel_size={self._kernel_size})"


@register_persistable
class DoubleGaussianPsf(Psf):
    """A circular core + wing double Gaussian whose width varies smoothly over the image.

    The core width at parent position ``(x, y)`` is
    ``sigma * (1 + gx*u + gy*v + curvature*(u² + v²))`` with
    ``u = (x - cx) / scale`` and ``v = (y - cy) / scale``; the wing is
    ``wing_ratio`` times wider and holds ``wing_fraction`` of the flux.

    Parameters
    ----------
    sigma : `float`
        Core width (pixels) at the centre ``(cx, cy)``.
    wing_ratio : `float`, optional
        Wing width / core width.
    wing_fraction : `float`, optional
        Fraction of the flux in the wing (0 <= f < 1).
    center : `tuple` [`float`, `float`], optional
        ``(cx, cy)``: parent position of the reference width.
    scale : `float`, optional
        Length (pixels) normalising the offsets ``u, v`` (e.g. half the detector width).
    gradient : `tuple` [`float`, `float`], optional
        ``(gx, gy)``: relative change of the width per ``scale``.
    curvature : `float`, optional
        Relative quadratic change of the width at distance ``scale``.
    kernel_size : `int`, optional
        Odd kernel width; by default large enough for 4 wing widths at the
        widest point within ``|u|, |v| <= 1.5``.
    """

    persistence_name = "DoubleGaussianPsf"

    def __init__(
        self,
        sigma: float,
        wing_ratio: float = 2.0,
        wing_fraction: float = 0.1,
        center: tuple[float, float] = (0.0, 0.0),
        scale: float = 1000.0,
        gradient: tuple[float, float] = (0.0, 0.0),
        curvature: float = 0.0,
        kernel_size: int | None = None,
    ) -> None:
        if not (np.isfinite(sigma) and sigma > 0):
            raise ImageError(f"sigma must be positive, got {sigma}")
        if not (wing_ratio >= 1.0 and 0.0 <= wing_fraction < 1.0 and scale > 0):
            raise ImageError("need wing_ratio >= 1, 0 <= wing_fraction < 1 and scale > 0")
        self.sigma0 = float(sigma)
        self.wing_ratio = float(wing_ratio)
        self.wing_fraction = float(wing_fraction)
        self.center = (float(center[0]), float(center[1]))
        self.scale = float(scale)
        self.gradient = (float(gradient[0]), float(gradient[1]))
        self.curvature = float(curvature)
        grid = np.linspace(-1.5, 1.5, 13)
        uu, vv = np.meshgrid(grid, grid)
        rel = self._relative_width(uu, vv)
        if np.any(rel <= 0.05):
            raise ImageError("PSF width becomes non-positive within 1.5 scales of the centre")
        if kernel_size is None:
            kernel_size = _odd_size(4.0 * self.sigma0 * self.wing_ratio * rel.max())
        if kernel_size % 2 != 1 or kernel_size < 3:
            raise ImageError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        self._kernel_size = int(kernel_size)

    def _relative_width(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        gx, gy = self.gradient
        return 1.0 + gx * u + gy * v + self.curvature * (u * u + v * v)

    def core_sigma(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """Core width in pixels at parent position ``(x, y)``."""
        u = (np.asarray(x, dtype=float) - self.center[0]) / self.scale
        v = (np.asarray(y, dtype=float) - self.center[1]) / self.scale
        rel = self._relative_width(u, v)
        if np.any(rel <= 0):
            raise ImageError("PSF evaluated where its width is not positive")
        return self.sigma0 * rel

    @property
    def kernel_size(self) -> int:
        """Width of the kernel images in pixels."""
        return self._kernel_size

    def _stamps(self, x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        s1 = self.core_sigma(x, y)
        k = self._kernel_size
        f = self.wing_fraction
        # separable components, each a product of 1-D pixel-integrated profiles;
        # the 2-D normalisation follows from the 1-D sums, so only one pass
        # over the (n, k, k) stack is needed.
        cx = _pixel_integrated_gaussian(dx, s1, k)
        cy = _pixel_integrated_gaussian(dy, s1, k)
        if f == 0:
            norm = cx.sum(axis=1) * cy.sum(axis=1)
            return (cy / norm[:, None])[:, :, None] * cx[:, None, :]
        s2 = s1 * self.wing_ratio
        wx = _pixel_integrated_gaussian(dx, s2, k)
        wy = _pixel_integrated_gaussian(dy, s2, k)
        norm = (1.0 - f) * cx.sum(axis=1) * cy.sum(axis=1) + f * wx.sum(axis=1) * wy.sum(axis=1)
        cy *= ((1.0 - f) / norm)[:, None]
        wy *= (f / norm)[:, None]
        out = cy[:, :, None] * cx[:, None, :]
        out += wy[:, :, None] * wx[:, None, :]
        return out

    def compute_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorised `compute_image`: an ``(n, k, k)`` stack."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        return self._stamps(x, y, x - nearest_pixel(x), y - nearest_pixel(y))

    def compute_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF centred at the sub-pixel offset of ``(x, y)``."""
        return self.compute_images(np.array([x]), np.array([y]))[0]

    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """Return the PSF at ``(x, y)`` centred on the central pixel."""
        zero = np.zeros(1)
        return self._stamps(np.array([x], dtype=float), np.array([y], dtype=float), zero, zero)[0]

    def compute_shape(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple:
        """Return ``(ixx, iyy, ixy)`` of the continuous profile at ``(x, y)``."""
        s1 = self.core_sigma(x, y)
        f = self.wing_fraction
        m = (1.0 - f) * s1**2 + f * (s1 * self.wing_ratio) ** 2
        return (m, np.array(m, copy=True), 0.0 * m)

    def _params(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma0,
            "wing_ratio": self.wing_ratio,
            "wing_fraction": self.wing_fraction,
            "center": np.array(self.center),
            "scale": self.scale,
            "gradient": np.array(self.gradient),
            "curvature": self.curvature,
            "kernel_size": self._kernel_size,
        }

    def to_hdu(self) -> fits.ImageHDU:
        """Return the model as a FITS HDU."""
        return params_to_hdu(self._params())

    @classmethod
    def from_hdu(cls, hdu: fits.ImageHDU) -> DoubleGaussianPsf:
        """Rebuild the model from `to_hdu`'s output."""
        p = params_from_hdu(hdu)
        return cls(
            p["sigma"],
            p["wing_ratio"],
            p["wing_fraction"],
            tuple(p["center"]),
            p["scale"],
            tuple(p["gradient"]),
            p["curvature"],
            int(p["kernel_size"]),
        )

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, DoubleGaussianPsf):
            return False
        a, b = self._params(), other._params()
        return all(np.array_equal(a[key], b[key]) for key in a)

    def __repr__(self) -> str:
        return (
            f"DoubleGaussianPsf(sigma={self.sigma0}, wing_ratio={self.wing_ratio}, "
            f"wing_fraction={self.wing_fraction}, center={self.center}, scale={self.scale}, "
            f"gradient={self.gradient}, curvature={self.curvature}, "
            f"kernel_size={self._kernel_size})"
        )


def psf_to_hdu(psf: Psf, extname: str = "PSF") -> fits.BinTableHDU | fits.ImageHDU:
    """Serialise any registered PSF into one FITS HDU."""
    if not isinstance(psf, Psf):
        raise ImageError(f"expected a Psf, got {type(psf).__name__}")
    return object_to_hdu(psf, extname)


def psf_from_hdu(hdu: fits.BinTableHDU | fits.ImageHDU) -> Psf:
    """Rebuild a PSF from an HDU written by `psf_to_hdu`."""
    psf = object_from_hdu(hdu)
    if not isinstance(psf, Psf):
        raise ImageError(f"HDU {hdu.name!r} does not hold a Psf")
    return psf
