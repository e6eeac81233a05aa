"""PSF-matching convolution kernels (Alard & Lupton 1998), fitted on stars.

The kernel ``K`` that turns the template's PSF into the science PSF,
``S ≈ K ⊗ T + b``, is a linear combination of basis kernels: Gaussians of
three widths multiplied by polynomials in the kernel coordinates (the
Alard-Lupton basis).  Their coefficients may vary linearly over the image.
Every basis image but the first is made to sum to zero, so the first
coefficient alone carries the photometric scale.  The coefficients are a
linear least-squares fit to stamps around bright isolated stars, with
iterative rejection of stars that do not fit (variables, blends, defects).

When too few stars are available, `gaussian_matching_kernel` gives the
kernel from the two PSF models (a Gaussian of width
``sqrt(sigma_sci**2 - sigma_tmpl**2)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy.spatial import cKDTree

from tasks.core.base import TaskError
from tasks.diffim.fftconv import TiledSpectrum

__all__ = [
    "MatchingKernel",
    "alard_lupton_basis",
    "clean_stamps",
    "fit_matching_kernel",
    "gaussian_matching_kernel",
    "KernelFitError",
]


class KernelFitError(TaskError):
    """The PSF-matching kernel could not be fitted."""


def alard_lupton_basis(
    half: int, sigmas: tuple[float, ...], degrees: tuple[int, ...]
) -> np.ndarray:
    """Return the Alard-Lupton basis kernels, ``(n_basis, 2 half + 1, 2 half + 1)``.

    Each Gaussian of width ``sigmas[i]`` is multiplied by ``u**p v**q`` for
    ``p + q <= degrees[i]``.  The first kernel (the narrowest Gaussian) sums
    to 1; every other kernel has the first subtracted (even terms) so that it
    sums to 0, and is scaled to unit norm.
    """
    g = np.arange(-half, half + 1, dtype=float)
    v, u = np.meshgrid(g, g, indexing="ij")
    basis = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        gauss = np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))
        for p in range(degree + 1):
            for q in range(degree + 1 - p):
                basis.append(gauss * u**p * v**q)
    basis = np.array(basis)
    first = basis[0] / basis[0].sum()
    out = [first]
    for b in basis[1:]:
        total = b.sum()
        if abs(total) > 1e-12 * np.abs(b).sum():
            b = b / total - first
        out.append(b / np.sqrt((b * b).sum()))
    return np.array(out)


@dataclass
class MatchingKernel:
    """A spatially varying convolution kernel.

    Attributes
    ----------
    basis : `numpy.ndarray`
        ``(n_basis, k, k)`` basis kernels.
    coefficients : `numpy.ndarray`
        ``(n_basis, n_spatial)``: coefficient of basis ``i`` is
        ``c[i, 0] + c[i, 1] u + c[i, 2] v`` (``n_spatial`` 1 or 3) with
        ``u, v`` the position scaled to [-1, 1] over ``bbox_xy``.
    background : `float`
        Constant background difference (science minus matched template).
    bbox_xy : `tuple`
        ``(x0, y0, x1, y1)``: array-coordinate box used to scale positions.
    n_stars : `int`
        Stars used in the final fit (0 for a model-derived kernel).
    """

    basis: np.ndarray
    coefficients: np.ndarray
    background: float
    bbox_xy: tuple[float, float, float, float]
    n_stars: int = 0

    @property
    def size(self) -> int:
        """Width of the kernel images."""
        return self.basis.shape[-1]

    def spatial_kernels(self) -> np.ndarray:
        """Return the kernels multiplying ``1, u, v``: ``(n_spatial, k, k)``."""
        return np.einsum("is,ijk->sjk", self.coefficients, self.basis)

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """Return the kernel image at array position ``(x, y)``."""
        terms = self._spatial_terms(np.array([x]), np.array([y]))[0]
        return np.einsum("s,sjk->jk", terms, self.spatial_kernels())

    def _spatial_terms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.bbox_xy
        u = 2.0 * (x - x0) / max(x1 - x0, 1.0) - 1.0
        v = 2.0 * (y - y0) / max(y1 - y0, 1.0) - 1.0
        n_spatial = self.coefficients.shape[1]
        terms = [np.ones_like(u), u, v][:n_spatial]
        return np.column_stack(terms)

    def axis_weights(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``u`` along the columns and ``v`` along the rows of a ``height x width`` image."""
        x0, y0, x1, y1 = self.bbox_xy
        u = (2.0 * (np.arange(width) - x0) / max(x1 - x0, 1.0) - 1.0).astype(np.float32)
        v = (2.0 * (np.arange(height) - y0) / max(y1 - y0, 1.0) - 1.0).astype(np.float32)
        return u, v

    def convolve(self, image: np.ndarray, spectrum: TiledSpectrum | None = None) -> np.ndarray:
        """Convolve an image (array coordinates) with the spatially varying kernel.

        By linearity the result is ``T ⊗ K_1 + u (T ⊗ K_u) + v (T ⊗ K_v)``
        (exact): the image is transformed once (tile by tile,
        `tasks.diffim.fftconv.TiledSpectrum`) and each spatial kernel costs one
        product and one inverse transform.

        Parameters
        ----------
        image : `numpy.ndarray`
            Finite image.
        spectrum : `tasks.diffim.fftconv.TiledSpectrum`, optional
            Tile transforms of ``image`` with a halo of at least half the
            kernel size (reused when given).

        Returns
        -------
        convolved : `numpy.ndarray` (float32)
        """
        kernels = self.spatial_kernels().astype(np.float32)
        height, width = image.shape
        if spectrum is None:
            spectrum = TiledSpectrum(image, self.size // 2)
        u, v = self.axis_weights(width, height)
        n = len(kernels)
        return spectrum.convolve_terms(list(kernels), [None, u, None][:n], [None, None, v][:n])

    def sum_at(self, x: float, y: float) -> float:
        """Sum of the kernel (the photometric scale) at array position ``(x, y)``."""
        return float(self.kernel_at(x, y).sum())


def gaussian_matching_kernel(
    sigma_science: float, sigma_template: float, half: int, shape: tuple[int, int]
) -> MatchingKernel:
    """Kernel from two Gaussian-equivalent PSF widths.

    Raises
    ------
    KernelFitError
        If the template PSF is not narrower than the science PSF.
    """
    if not sigma_science > sigma_template:
        raise KernelFitError(
            f"template PSF (sigma {sigma_template:.2f} px) is not narrower than the science PSF "
            f"(sigma {sigma_science:.2f} px): a Gaussian matching kernel cannot sharpen it"
        )
    width = np.sqrt(sigma_science**2 - sigma_template**2)
    g = np.arange(-half, half + 1, dtype=float)
    k = np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * width**2))
    k /= k.sum()
    return MatchingKernel(k[None], np.ones((1, 1)), 0.0, (0, 0, shape[1] - 1, shape[0] - 1))


def clean_stamps(usable: np.ndarray, x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Which stars' ``(2 half + 1)**2`` stamps lie inside the image on usable pixels only.

    Parameters
    ----------
    usable : `numpy.ndarray` of bool
        Pixels that may enter a stamp.
    x, y : `numpy.ndarray`
        Array positions of the stars (rounded to the nearest pixel).
    half : `int`
        Half-size of the stamp (fitted stamp plus kernel half-size).

    Returns
    -------
    clean : `numpy.ndarray` of bool
        One flag per star.

    Notes
    -----
    Computed from a summed-area table of the unusable pixels, so checking
    every peak of a real image (tens of thousands) costs one pass over it.
    """
    height, width = usable.shape
    cx = np.floor(np.asarray(x, dtype=float) + 0.5).astype(np.int64)
    cy = np.floor(np.asarray(y, dtype=float) + 0.5).astype(np.int64)
    inside = (cx >= half) & (cx < width - half) & (cy >= half) & (cy < height - half)
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    np.cumsum(np.cumsum(~usable, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    x0 = np.clip(cx - half, 0, width)
    x1 = np.clip(cx + half + 1, 0, width)
    y0 = np.clip(cy - half, 0, height)
    y1 = np.clip(cy + half + 1, 0, height)
    bad = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return inside & (bad == 0)


def _basis_convolutions(stamps: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Template stamps convolved with every basis kernel ('valid' region).

    Computed with small FFTs (one per stamp and one per basis kernel).

    Parameters
    ----------
    stamps : `numpy.ndarray`
        ``(n, s + k - 1, s + k - 1)`` template stamps.
    basis : `numpy.ndarray`
        ``(n_basis, k, k)`` kernels.

    Returns
    -------
    columns : `numpy.ndarray`
        ``(n, s * s, n_basis)``: one design-matrix column per basis kernel.
    """
    k = basis.shape[-1]
    n, big = stamps.shape[0], stamps.shape[-1]
    side = big - k + 1
    size = sp_fft.next_fast_len(big, real=True)
    stamp_spectra = sp_fft.rfft2(stamps, s=(size, size))
    basis_spectra = sp_fft.rfft2(basis, s=(size, size))
    product = stamp_spectra[:, None] * basis_spectra[None, :]
    full = sp_fft.irfft2(product, s=(size, size), overwrite_x=True)
    valid = full[:, :, k - 1 : k - 1 + side, k - 1 : k - 1 + side]
    return valid.reshape(n, len(basis), side * side).transpose(0, 2, 1)


def fit_matching_kernel(
    science: np.ndarray,
    science_var: np.ndarray,
    template: np.ndarray,
    template_var: np.ndarray,
    usable: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    basis: np.ndarray,
    *,
    stamp_half: int,
    spatial_order: int = 1,
    n_iter: int = 3,
    clip: float = 3.0,
    min_stars: int = 5,
    neighbours: np.ndarray | None = None,
    neighbour_radius: float = 0.0,
    constant_sum: bool = True,
    fit_background: bool = True,
) -> tuple[MatchingKernel, np.ndarray]:
    """Fit ``science ≈ K ⊗ template + b`` on stamps around stars.

    Parameters
    ----------
    science, science_var, template, template_var : `numpy.ndarray`
        Images (same shape, same pixel grid and flux units) and variances.
    usable : `numpy.ndarray` of bool
        Pixels that may enter a stamp (stars touching others are dropped).
    x, y : `numpy.ndarray`
        Array positions of candidate stars.
    basis : `numpy.ndarray`
        Basis kernels (see `alard_lupton_basis`).
    stamp_half : `int`
        Half-size of the science stamp fitted around each star.
    spatial_order : {0, 1}, optional
        Order of the spatial variation of the coefficients.
    n_iter, clip : optional
        Rejection iterations and threshold (robust sigma of per-star chi2).
    min_stars : `int`, optional
        Fewest stars accepted.
    neighbours : `numpy.ndarray`, optional
        ``(m, 2)`` array positions of all sources: stamp pixels within
        ``neighbour_radius`` of another source (and closer to it than to the
        star) get zero weight, so neighbours that differ between the images
        (variables, moving objects) do not bias the fit.
    neighbour_radius : `float`, optional
        Radius (pixels) of the neighbours' excluded discs.
    constant_sum : `bool`, optional
        Keep the kernel sum (the photometric scale) the same over the image:
        only the basis kernels that sum to zero vary spatially (Alard 2000;
        the LSST AL kernel's constant first term), and the sum comes from a
        first, spatially constant fit.  Otherwise the shape can be traded
        against the scale and its gradient.
    fit_background : `bool`, optional
        Fit a constant background difference ``b`` (else ``b = 0``).

    Returns
    -------
    kernel : `MatchingKernel`
    used : `numpy.ndarray` of bool
        Which candidates entered the final fit.

    Raises
    ------
    KernelFitError
        If fewer than ``min_stars`` usable stamps remain.
    """
    height, width = science.shape
    khalf = basis.shape[-1] // 2
    big = stamp_half + khalf
    cx = np.floor(np.asarray(x) + 0.5).astype(int)
    cy = np.floor(np.asarray(y) + 0.5).astype(int)
    inside = (cx >= big) & (cx < width - big) & (cy >= big) & (cy < height - big)
    offsets = np.arange(-big, big + 1)
    candidates = np.flatnonzero(inside)
    rows = cy[candidates, None] + offsets[None, :]
    cols = cx[candidates, None] + offsets[None, :]
    clean = usable[rows[:, :, None], cols[:, None, :]].all(axis=(1, 2))
    index = candidates[clean]
    if len(index) < min_stars:
        raise KernelFitError(
            f"only {len(index)} usable star stamps for the PSF-matching kernel (need {min_stars})"
        )
    rows, cols = rows[clean], cols[clean]
    inner_rows = rows[:, khalf : khalf + 2 * stamp_half + 1]
    inner_cols = cols[:, khalf : khalf + 2 * stamp_half + 1]
    conv = _basis_convolutions(template[rows[:, :, None], cols[:, None, :]], basis)
    n_stars, n_pix, n_basis = conv.shape
    target = science[inner_rows[:, :, None], inner_cols[:, None, :]].reshape(n_stars, n_pix)
    where = (inner_rows[:, :, None], inner_cols[:, None, :])
    var = science_var[where].astype(np.float64) + template_var[where]
    weight = 1.0 / var.reshape(n_stars, n_pix)
    if neighbours is not None and len(neighbours) and neighbour_radius > 0:
        tree = cKDTree(neighbours)
        side = 2 * stamp_half + 1
        reach = stamp_half * np.sqrt(2.0) + neighbour_radius
        for j, star in enumerate(index):
            sx, sy = float(np.asarray(x)[star]), float(np.asarray(y)[star])
            near = [
                k
                for k in tree.query_ball_point((sx, sy), reach)
                if np.hypot(*(neighbours[k] - (sx, sy))) > 1.0
            ]
            if not near:
                continue
            gy = inner_rows[j][:, None].astype(float)
            gx = inner_cols[j][None, :].astype(float)
            own = np.hypot(gx - sx, gy - sy)
            drop = np.zeros((side, side), dtype=bool)
            for k in near:
                dk = np.hypot(gx - neighbours[k, 0], gy - neighbours[k, 1])
                drop |= (dk < neighbour_radius) & (dk < own)
            weight[j] = np.where(drop.ravel(), 0.0, weight[j])
    n_spatial = 3 if spatial_order >= 1 and len(index) >= 3 * min_stars else 1
    u = 2.0 * cx[index] / max(width - 1, 1) - 1.0
    v = 2.0 * cy[index] / max(height - 1, 1) - 1.0
    spatial = np.column_stack([np.ones(len(index)), u, v])[:, :n_spatial]
    # The design matrix of star i is [C_i ⊗ s_i, 1] (C_i: its basis
    # convolutions, s_i: its spatial terms, then the background), so the
    # normal equations are sums over stars of small per-star products,
    # computed once; each rejection iteration only re-sums them.
    sqrt_w = np.sqrt(weight)
    cw = conv * sqrt_w[:, :, None]
    gram = np.matmul(cw.transpose(0, 2, 1), cw)  # (n, nb, nb): C^T W C
    cross = np.einsum("npb,np->nb", cw, sqrt_w)  # C^T W 1
    total_w = weight.sum(axis=1)  # 1^T W 1
    proj = np.einsum("npb,np->nb", cw, target * sqrt_w)  # C^T W t
    proj_bg = np.einsum("np,np->n", weight, target)  # 1^T W t
    bbox_xy = (0.0, 0.0, float(width - 1), float(height - 1))

    def solve(n_sp: int, fixed: dict[int, float], active: np.ndarray) -> np.ndarray:
        """Weighted least squares over the active stars; ``fixed``: parameter -> value."""
        n_par = n_basis * n_sp + 1  # parameter (b, s) is b * n_sp + s; background last
        sa = spatial[active, :n_sp]
        normal = np.empty((n_par, n_par))
        normal[:-1, :-1] = np.einsum("ibc,is,it->bsct", gram[active], sa, sa).reshape(
            n_par - 1, n_par - 1
        )
        normal[:-1, -1] = np.einsum("ib,is->bs", cross[active], sa).ravel()
        normal[-1, :-1] = normal[:-1, -1]
        normal[-1, -1] = total_w[active].sum()
        rhs = np.empty(n_par)
        rhs[:-1] = np.einsum("ib,is->bs", proj[active], sa).ravel()
        rhs[-1] = proj_bg[active].sum()
        solution = np.zeros(n_par)
        free = np.ones(n_par, dtype=bool)
        for index_, value in fixed.items():
            free[index_] = False
            solution[index_] = value
        if not fit_background:
            free[-1] = False
        rhs = rhs[free] - normal[np.ix_(free, ~free)] @ solution[~free]
        normal = normal[np.ix_(free, free)]
        scale = np.sqrt(np.diag(normal)) + 1e-30
        solution[free] = (
            np.linalg.lstsq(normal / scale[:, None] / scale[None, :], rhs / scale, rcond=1e-12)[0]
            / scale
        )
        return solution

    def fit(n_sp: int, fixed: dict[int, float], active: np.ndarray):
        """Solve with iterative rejection of the stars that do not fit."""
        for _ in range(max(n_iter, 1)):
            solution = solve(n_sp, fixed, active)
            # per-star kernel coefficients a_i = A s_i; residuals t_i - C_i a_i - b
            per_star = spatial[:, :n_sp] @ solution[:-1].reshape(n_basis, n_sp).T
            resid = target - np.einsum("npb,nb->np", conv, per_star) - solution[-1]
            chi2 = np.sum(resid * resid * weight, axis=1) / n_pix
            median = np.median(chi2[active])
            mad = 1.4826 * np.median(np.abs(chi2[active] - median))
            new_active = chi2 < median + clip * max(mad, 0.05 * median)
            if np.array_equal(new_active, active) or new_active.sum() < min_stars:
                break
            active = new_active
        return solution, active

    active = np.ones(n_stars, dtype=bool)
    if constant_sum and n_spatial > 1:
        # The kernel sum is one number for the whole image; it is taken from
        # the spatially constant fit, where it is well determined.  Letting
        # the shape vary over the image while fitting the sum as well allows
        # combinations of the (zero-sum) spatial terms and the sum that fit
        # the stamps equally well with a sum several per cent off.
        constant, active = fit(1, {}, active)
        fixed = {0: float(constant[0])} | {s_: 0.0 for s_ in range(1, n_spatial)}
        solution, active = fit(n_spatial, fixed, active)
    else:
        solution, active = fit(n_spatial, {}, active)
    coefficients = solution[:-1].reshape(n_basis, n_spatial)
    used = np.zeros(len(cx), dtype=bool)
    used[index[active]] = True
    kernel = MatchingKernel(basis, coefficients, float(solution[-1]), bbox_xy, int(active.sum()))
    return kernel, used
