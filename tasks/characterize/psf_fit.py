"""Fit a `PixelGridPsf` to star stamps, with iterative outlier rejection.

Each star stamp is shifted (Fourier phase ramp) so that the star sits on the central
pixel and divided by its flux; every pixel of the ``k x k`` grid is then a
weighted linear least-squares fit of a triangular 2-D Chebyshev polynomial
over the detector (one shared normal matrix, as every star has one weight).
Fluxes are re-measured with the model and the fit repeated; stars whose
residual chi² is a robust outlier are rejected and the model refitted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tasks.characterize.chebyshev import chebyshev_basis, term_orders
from tasks.characterize.psf_model import PixelGridPsf
from tasks.characterize.resample import fft_shift_stamps
from tasks.core.base import TaskError
from tasks.forcedphot.psf_flux import central_pixel, gather_stamps

__all__ = ["STAMP_MARGIN", "PsfFitError", "PsfFitResult", "fit_pixel_grid_psf"]

STAMP_MARGIN = 4


class PsfFitError(TaskError):
    """The PSF model could not be fitted (too few usable stars, degenerate data)."""


@dataclass
class PsfFitResult:
    """Result of `fit_pixel_grid_psf`.

    Attributes
    ----------
    psf : `PixelGridPsf`
        The fitted model.
    usable : `numpy.ndarray` of bool
        Stars that entered the fit (clean or patched stamps, positive flux).
    used : `numpy.ndarray` of bool
        Stars used in the final fit (usable and not rejected).
    flux : `numpy.ndarray`
        PSF flux of each usable star from the final model (NaN otherwise).
    chi2 : `numpy.ndarray`
        Reduced chi² of each usable star's residual (NaN otherwise).
    n_iter : `int`
        Rejection iterations done.
    """

    psf: PixelGridPsf
    usable: np.ndarray
    used: np.ndarray
    flux: np.ndarray
    chi2: np.ndarray
    n_iter: int


def _solve_model(basis: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares of every pixel on the spatial basis; returns ``(T, P)``."""
    sw = np.sqrt(weights)[:, None]
    coefficients, *_ = np.linalg.lstsq(basis * sw, values * sw, rcond=None)
    return coefficients


def fit_pixel_grid_psf(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None,
    origin: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    domain: tuple[float, float, float, float],
    kernel_size: int = 25,
    order: int = 2,
    bad_mask: int = 0,
    min_stars: int = 6,
    n_iter: int = 3,
    clip_sigma: float = 4.0,
    margin: int = STAMP_MARGIN,
    max_bad_fraction: float = 0.05,
    core_radius: int = 3,
) -> PsfFitResult:
    """Fit a spatially varying pixel-grid PSF to stars at known positions.

    Stars whose grown stamp is on the image and clean are fitted first.
    Stars with a few bad pixels (at most ``max_bad_fraction`` of the stamp,
    none within ``core_radius`` of the centre) are then added, their bad
    pixels replaced by the first model scaled to the star's flux (measured
    on its good pixels), and the model is fitted again.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        Background-subtracted image and its variance.
    mask : `numpy.ndarray` or `None`
        Integer mask plane.
    origin : `tuple` [`int`, `int`]
        Parent ``(x0, y0)`` of the arrays.
    x, y : `numpy.ndarray`
        Parent positions of the candidate stars.
    domain : `tuple`
        ``(xmin, ymin, xmax, ymax)`` of the spatial basis (the detector).
    kernel_size : `int`, optional
        Side of the model grid (odd).
    order : `int`, optional
        Maximum total degree of the spatial variation.
    bad_mask : `int`, optional
        Mask bits of bad pixels.
    min_stars : `int`, optional
        Fewest clean stars to fit with (at least the number of basis terms).
    n_iter : `int`, optional
        Maximum outlier-rejection iterations.
    clip_sigma : `float`, optional
        A star is rejected when its reduced chi² exceeds the median by more
        than ``clip_sigma`` robust standard deviations (1.4826 MAD, floored
        at the chi² noise ``sqrt(2 / dof)``).
    margin : `int`, optional
        Extra pixels around each star stamp used while shifting it; the
        grown stamp must lie on the image.
    max_bad_fraction : `float`, optional
        Largest fraction of bad pixels in the grown stamp of a patched star.
    core_radius : `int`, optional
        Half-width of the central box that must be free of bad pixels.

    Returns
    -------
    result : `PsfFitResult`

    Raises
    ------
    PsfFitError
        If fewer than ``max(min_stars, n_terms)`` clean stars remain.
    """
    if kernel_size % 2 == 0 or kernel_size < 3:
        raise PsfFitError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = x.size
    geometry = _Geometry(kernel_size, kernel_size // 2 + margin, domain, order)
    needed = max(min_stars, len(term_orders(order)))
    finite = np.isfinite(x) & np.isfinite(y)
    cx, cy = central_pixel(x), central_pixel(y)

    data, inside = gather_stamps(image, origin, cx, cy, geometry.in_half)
    var, _ = gather_stamps(variance, origin, cx, cy, geometry.in_half)
    good = inside & np.isfinite(data) & np.isfinite(var)
    if mask is not None and bad_mask:
        msk, _ = gather_stamps(mask, origin, cx, cy, geometry.in_half)
        good &= (msk & bad_mask) == 0
    clean = finite & good.all(axis=(1, 2))
    if clean.sum() < needed:
        raise PsfFitError(f"only {int(clean.sum())} usable PSF stars, need at least {needed}")
    c = geometry.in_half
    core = slice(c - core_radius, c + core_radius + 1)
    n_bad = (~good).sum(axis=(1, 2))
    patchable = finite & inside.all(axis=(1, 2)) & ~clean
    patchable &= (n_bad <= max_bad_fraction * good[0].size) & good[:, core, core].all(axis=(1, 2))

    data = data.astype(np.float64)
    var = var.astype(np.float64)
    idx = np.flatnonzero(clean)
    fit = _fit_best_order(data[idx], var[idx], x[idx], y[idx], geometry, needed, n_iter, clip_sigma)
    geometry = replace(geometry, order=fit.psf.order)
    if patchable.any():
        pidx = np.flatnonzero(patchable)
        _patch(data, var, good, pidx, x, y, fit.psf, geometry)
        idx = np.sort(np.concatenate([idx, pidx]))
        fit = _fit_stamps(data[idx], var[idx], x[idx], y[idx], geometry, needed, n_iter, clip_sigma)
    usable = np.zeros(n, dtype=bool)
    usable[idx[fit.kept]] = True
    used = np.zeros(n, dtype=bool)
    used[idx[fit.kept][fit.active]] = True
    flux_out = np.full(n, np.nan)
    chi2_out = np.full(n, np.nan)
    flux_out[idx[fit.kept]] = fit.flux
    chi2_out[idx[fit.kept]] = fit.chi2
    return PsfFitResult(
        psf=fit.psf, usable=usable, used=used, flux=flux_out, chi2=chi2_out, n_iter=fit.n_iter
    )


@dataclass
class _Geometry:
    kernel_size: int
    in_half: int
    domain: tuple[float, float, float, float]
    order: int

    @property
    def core(self) -> slice:
        half = self.kernel_size // 2
        return slice(self.in_half - half, self.in_half + half + 1)


@dataclass
class _StampFit:
    psf: PixelGridPsf
    kept: np.ndarray  # stars with positive flux, among the inputs
    active: np.ndarray  # stars used in the last fit, among the kept ones
    flux: np.ndarray
    chi2: np.ndarray
    n_iter: int
    press: float  # mean leave-one-out chi² per star (model selection)


def _patch(data, var, good, rows, x, y, psf, geometry) -> None:
    """Replace the bad pixels of stamps ``rows`` by the model scaled to each star's flux."""
    model = np.zeros((rows.size,) + data.shape[1:])
    core = geometry.core
    model[:, core, core] = psf.compute_images(x[rows], y[rows])
    g = good[rows]
    mg = np.where(g, model, 0.0)
    flux = np.einsum("nij,nij->n", mg, np.where(g, data[rows], 0.0)) / np.einsum(
        "nij,nij->n", mg, mg
    )
    data[rows] = np.where(g, data[rows], flux[:, None, None] * model)
    typical = np.array([np.median(v[m]) for v, m in zip(var[rows], g, strict=True)])
    var[rows] = np.where(g, var[rows], typical[:, None, None])


def _fit_best_order(data, var, x, y, geometry, needed, n_iter, clip_sigma) -> _StampFit:
    """Fit spatial orders ``0 .. geometry.order`` and keep the best predictive one.

    The score is the leave-one-out (PRESS) chi² per star, exact and cheap for
    this linear fit (``r / (1 - h)`` with ``h`` the star's leverage), capped
    at 4 times the number of pixels so that an outlier costs the same at
    every order.  Many bright stars support the highest order; a few faint
    ones get a model that does not swing at the corners of the detector.
    Skipped (highest order) with at least 20 stars per polynomial term.
    """
    top = geometry.order
    if x.size >= 20 * len(term_orders(top)):
        return _fit_stamps(data, var, x, y, geometry, needed, n_iter, clip_sigma)
    best: _StampFit | None = None
    for order in range(top + 1):
        n_terms = len(term_orders(order))
        if x.size < max(needed, n_terms):
            break
        fit = _fit_stamps(
            data, var, x, y, replace(geometry, order=order), max(needed, n_terms), n_iter,
            clip_sigma,
        )  # fmt: skip
        if best is None or fit.press < best.press:
            best = fit
    assert best is not None
    return best


def _fit_stamps(data, var, x, y, geometry, needed, n_iter, clip_sigma) -> _StampFit:
    """Fit the model to complete stamps, with flux iterations and outlier rejection."""
    k = geometry.kernel_size
    n_terms = len(term_orders(geometry.order))
    core = geometry.core
    dx, dy = x - central_pixel(x), y - central_pixel(y)
    # shift on the larger stamp, so that the periodic wrap of the FFT stays in the margin
    centred = fft_shift_stamps(data, -dx, -dy)[:, core, core]
    flux = centred.sum(axis=(1, 2))
    kept = flux > 0
    if kept.sum() < needed:
        raise PsfFitError(f"only {int(kept.sum())} PSF stars with positive flux, need {needed}")
    centred, flux, x, y = centred[kept], flux[kept], x[kept], y[kept]
    data_k, var_k = data[kept][:, core, core], var[kept][:, core, core]
    basis = chebyshev_basis(x, y, geometry.domain, geometry.order)
    mean_var = var_k.mean(axis=(1, 2))
    active = np.ones(x.size, dtype=bool)
    dof = k * k - 1
    iteration = 0
    psf: PixelGridPsf | None = None
    for iteration in range(n_iter + 1):  # noqa: B007 - reported in the result
        for _ in range(2):  # model, then fluxes from the model, then model again
            values = (centred / flux[:, None, None]).reshape(x.size, -1)
            weights = flux**2 / mean_var
            coefficients = _solve_model(basis[active], values[active], weights[active])
            psf = PixelGridPsf(coefficients.reshape(n_terms, k, k), geometry.domain, geometry.order)
            kernels = psf.compute_kernel_images(x, y)
            flux = np.einsum("nij,nij->n", kernels, centred) / np.einsum(
                "nij,nij->n", kernels, kernels
            )
            flux = np.where(flux > 0, flux, centred.sum(axis=(1, 2)))
        models = psf.compute_images(x, y) * flux[:, None, None]
        chi2 = ((data_k - models) ** 2 / var_k).sum(axis=(1, 2)) / dof
        med = np.median(chi2[active])
        scatter = 1.4826 * np.median(np.abs(chi2[active] - med))
        scatter = max(scatter, np.sqrt(2.0 / dof))
        reject = active & (chi2 > med + clip_sigma * scatter)
        if iteration == n_iter or not reject.any() or (active & ~reject).sum() < needed:
            break
        active &= ~reject
    assert psf is not None
    # leave-one-out residuals of the active stars: r / (1 - leverage)
    a, w = basis[active], weights[active]
    normal_inv = np.linalg.pinv((a * w[:, None]).T @ a)
    leverage = w * np.einsum("st,tu,su->s", a, normal_inv, a)
    resid = values[active] - a @ coefficients
    press = w * (resid**2).sum(axis=1) / np.clip(1.0 - leverage, 1e-3, None) ** 2
    press_score = float(np.minimum(press, 4.0 * k * k).mean())
    return _StampFit(
        psf=psf, kept=kept, active=active, flux=flux, chi2=chi2, n_iter=iteration,
        press=press_score,
    )  # fmt: skip
