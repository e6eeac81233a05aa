"""Sources spread along the zenith direction by differential chromatic refraction (DCR).

A source's light reaches the detector spread along the zenith direction:
blue light is refracted more than red.  The simulator draws it as a few
components (`tasks.simulate.refraction.sed_dcr_components`), each the PSF at
the component's position carrying its flux fraction, so the image of a
source is ``Σ_j w_j · PSF(x + dx_j, y + dy_j)``.  The offsets are relative to
the source's flux-weighted mean position, which is where its light's
centroid lies (and the ``x, y`` of the simulator's truth).

`n_dcr_components` picks how many components make the discretisation error
negligible; `spread_stamps` draws the stamps of separable (Gaussian and
double-Gaussian) PSFs in one pass: each component's 2-D stamp is an outer
product of 1-D pixel-integrated profiles, so a source's stamp is one small
matrix product, and the cost grows with the number of components only
through 1-D profiles.  Each component is exactly the PSF model's own stamp
(pixel-integrated, truncated to the kernel around the component's pixel and
normalised there), drawn on a stamp grown to hold every component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from tasks.images.errors import ImageError
from tasks.images.geom import Box2I
from tasks.images.psf import DoubleGaussianPsf, GaussianPsf, Psf, nearest_pixel
from tasks.images.visit_info import Weather
from tasks.simulate.refraction import MAX_DCR_COMPONENTS, dcr_spread, sed_dcr_components

__all__ = [
    "DcrComponents",
    "n_dcr_components",
    "smallest_psf_width",
    "dcr_components",
    "is_separable",
    "spread_stamps",
]


@dataclass(frozen=True)
class DcrComponents:
    """Light of each source split into components at offsets from its centroid.

    Attributes
    ----------
    dx, dy : `numpy.ndarray`
        ``(n_src, n)`` offsets (pixels) of the components from the source's
        rendered position (its flux-weighted mean position).
    weight : `numpy.ndarray`
        ``(n_src, n)`` flux fractions; rows sum to 1.
    """

    dx: np.ndarray
    dy: np.ndarray
    weight: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(self.dx), np.shape(self.dy), np.shape(self.weight)}
        if len(shapes) != 1 or np.ndim(self.weight) != 2 or np.shape(self.weight)[1] < 1:
            raise ImageError("dx, dy and weight must share one (n_src, n_components) shape")
        arrays = (self.dx, self.dy, self.weight)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ImageError("DCR component offsets and weights must be finite")

    @property
    def n_components(self) -> int:
        """Components per source."""
        return int(np.shape(self.weight)[1])

    def __len__(self) -> int:
        return int(np.shape(self.weight)[0])

    def select(self, index: np.ndarray) -> DcrComponents:
        """Return the rows ``index`` (a boolean mask or integer indices, repeats allowed)."""
        return DcrComponents(self.dx[index], self.dy[index], self.weight[index])


def n_dcr_components(spread_px: float, sigma_px: float, tolerance: float = 1e-5) -> int:
    """Return how many Gauss components render a DCR-spread source within ``tolerance``.

    The error of an ``n``-point Gauss rule of a distribution of length ``L``
    applied to a Gaussian of width ``σ`` is at most about
    ``1.09 (L / 4σ)^{2n} / sqrt((2n)!)`` of the Gaussian's peak (the Gauss
    quadrature remainder with Cramér's bound on Hermite functions); the
    smallest ``n`` that brings this below ``tolerance`` is returned (capped
    at `tasks.simulate.refraction.MAX_DCR_COMPONENTS`).  Pixel integration
    and the wider wing only make the integrand smoother, so the bound holds
    for the pixel-integrated double Gaussian with ``σ`` its core width.

    Parameters
    ----------
    spread_px : `float`
        Length of the spread (pixels), e.g. ``R(λ_min) - R(λ_max)``.
    sigma_px : `float`
        Smallest width (pixels) of the PSF's narrowest component.
    tolerance : `float`, optional
        Largest error allowed, relative to the PSF's peak.

    Returns
    -------
    n : `int`
        ``1`` when the spread is negligible.
    """
    if not (sigma_px > 0 and 0 < tolerance < 1 and spread_px >= 0):
        raise ImageError("need spread_px >= 0, sigma_px > 0 and 0 < tolerance < 1")
    ratio = spread_px / (4.0 * sigma_px)
    if ratio == 0:
        return 1
    log_ratio = math.log(ratio)
    log_tol = math.log(tolerance / 1.09)
    for n in range(1, MAX_DCR_COMPONENTS + 1):
        if 2 * n * log_ratio - 0.5 * math.lgamma(2 * n + 1) <= log_tol:
            return n
    return MAX_DCR_COMPONENTS


def smallest_psf_width(psf: Psf, bbox: Box2I) -> float:
    """Smallest width (pixels) of the PSF's narrowest component over ``bbox`` (a 5×5 grid)."""
    if isinstance(psf, GaussianPsf):
        return psf.width
    gx, gy = np.meshgrid(np.linspace(bbox.x0, bbox.x1, 5), np.linspace(bbox.y0, bbox.y1, 5))
    if isinstance(psf, DoubleGaussianPsf):
        return float(np.min(psf.core_sigma(gx, gy)))
    return float(np.min(psf.sigma(gx, gy)))


def dcr_components(
    band: str,
    sed_slope: np.ndarray,
    zenith_distance_deg: float,
    weather: Weather,
    direction: tuple[float, float],
    pixel_scale: float,
    sigma_px: float,
    tolerance: float = 1e-5,
) -> DcrComponents:
    """Components of each source's DCR-spread light, in pixels from its mean position.

    Parameters
    ----------
    band : `str`
        Band of the visit.
    sed_slope : `numpy.ndarray`
        Spectral slope of each source.
    zenith_distance_deg : `float`
        Observed zenith distance of the visit.
    weather : `tasks.images.Weather`
        Weather of the visit.
    direction : `tuple` [`float`, `float`]
        Unit vector (pixels) toward the zenith.
    pixel_scale : `float`
        Arcsec per pixel.
    sigma_px : `float`
        Narrowest PSF width on the detector (`smallest_psf_width`).
    tolerance : `float`, optional
        Discretisation error allowed, relative to the PSF's peak
        (`n_dcr_components`).

    Returns
    -------
    components : `DcrComponents`
    """
    spread = dcr_spread(band, zenith_distance_deg, weather) / pixel_scale
    n = n_dcr_components(abs(spread), sigma_px, tolerance)
    shifts, weights = sed_dcr_components(band, sed_slope, zenith_distance_deg, weather, n)
    offset = (shifts - np.sum(shifts * weights, axis=1, keepdims=True)) / pixel_scale
    return DcrComponents(offset * direction[0], offset * direction[1], weights)


def is_separable(psf: Psf) -> bool:
    """Whether `spread_stamps` draws this PSF (circular Gaussians integrated over pixels)."""
    return isinstance(psf, (GaussianPsf, DoubleGaussianPsf))


def _gaussian_parts(psf: Psf, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux fraction ``(P,)`` and width ``(n, P · J)`` of each circular Gaussian of each component.

    ``P`` is the number of Gaussians of the PSF (1 or 2); the widths of the
    ``J`` components of the first Gaussian come first.
    """
    if isinstance(psf, GaussianPsf):
        return np.ones(1), np.full(px.shape, psf.width)
    if isinstance(psf, DoubleGaussianPsf):
        core = psf.core_sigma(px, py)
        f = psf.wing_fraction
        if f == 0:
            return np.ones(1), core
        return np.array([1.0 - f, f]), np.concatenate([core, core * psf.wing_ratio], axis=1)
    raise ImageError(f"{type(psf).__name__} is not a separable PSF")


def _placed_profiles(
    pos: np.ndarray, sigma: np.ndarray, half: int, grown: int, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """1-D pixel-integrated profiles of each component on the grown stamp.

    ``pos`` and ``sigma`` are ``(n, m)``; returns the ``(n, m, 2 * grown + 1)``
    profiles, zero outside each component's own kernel window (the ``2 *
    half + 1`` pixels around its nearest pixel, as the PSF model truncates
    it), and their ``(n, m)`` sums.
    """
    rel = pos - centre[:, None]
    own = nearest_pixel(pos) - centre[:, None]
    edges = np.arange(-grown - 0.5, grown + 1.0)
    scaled = (edges - rel[..., None]) * (1.0 / (math.sqrt(2.0) * sigma))[..., None]
    cumulative = erf(scaled)
    prof = np.subtract(cumulative[..., 1:], cumulative[..., :-1])
    prof *= 0.5
    prof *= np.abs(np.arange(-grown, grown + 1) - own[..., None]) <= half
    return prof, prof.sum(axis=-1)


def spread_stamps(
    psf: Psf,
    x: np.ndarray,
    y: np.ndarray,
    components: DcrComponents,
    grown_x: int,
    grown_y: int,
) -> np.ndarray:
    """Stamps of DCR-spread sources for a separable PSF.

    Parameters
    ----------
    psf : `Psf`
        A `GaussianPsf` or `DoubleGaussianPsf` (see `is_separable`).
    x, y : `numpy.ndarray`
        ``(n,)`` mean positions of the sources (parent pixels).
    components : `DcrComponents`
        ``n`` rows of offsets and weights.
    grown_x, grown_y : `int`
        Half sizes of the stamps: at least ``kernel_size // 2`` plus the
        largest pixel distance between a component and its source.

    Returns
    -------
    stamps : `numpy.ndarray`
        ``(n, 2 * grown_y + 1, 2 * grown_x + 1)`` centred on
        ``(round(x), round(y))``; stamp ``i`` is
        ``Σ_j weight[i, j] · psf.compute_image(x[i] + dx[i, j], y[i] + dy[i, j])``
        placed on the grown grid, so it sums to 1.
    """
    half = psf.kernel_size // 2
    n_comp = components.n_components
    px = x[:, None] + components.dx
    py = y[:, None] + components.dy
    fractions, sigma = _gaussian_parts(psf, px, py)
    repeat = (1, fractions.size)
    gx, sx = _placed_profiles(np.tile(px, repeat), sigma, half, grown_x, nearest_pixel(x))
    gy, sy = _placed_profiles(np.tile(py, repeat), sigma, half, grown_y, nearest_pixel(y))
    # each component is normalised over its own kernel, as the PSF's stamps are
    terms = (sx * sy).reshape(x.size, fractions.size, n_comp) * fractions[:, None]
    scale = (fractions[:, None] * components.weight[:, None, :]) / terms.sum(axis=1)[:, None, :]
    gy *= scale.reshape(x.size, -1, 1)
    # (n, ky, P·J) @ (n, P·J, kx)
    return np.matmul(gy.transpose(0, 2, 1), gx)
