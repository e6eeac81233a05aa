"""Fit a `PixelGridPsf` to star stamps, with iterative outlier rejection.

Each star stamp is shifted (Fourier phase ramp) so that the star sits on the central
pixel and divided by its flux; every pixel of the ``k x k`` grid is then a
weighted linear least-squares fit of a triangular 2-D Chebyshev polynomial
over the detector (one shared normal matrix, as every star has one weight).
Fluxes are re-measured with the model and the fit repeated; stars whose
residual chi² is a robust outlier are rejected and the model refitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.base import TaskError
from tasks.characterize.chebyshev import chebyshev_basis, term_orders
from tasks.characterize.psf_model import PixelGridPsf
from tasks.characterize.resample import fft_shift_stamps
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
        Stars whose stamps were complete and clean (fit candidates).
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
) -> PsfFitResult:
    """Fit a spatially varying pixel-grid PSF to stars at known positions.

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
        Mask bits that make a star stamp unusable.
    min_stars : `int`, optional
        Fewest stars to fit with (at least the number of basis terms).
    n_iter : `int`, optional
        Maximum outlier-rejection iterations.
    clip_sigma : `float`, optional
        A star is rejected when its reduced chi² exceeds the median by more
        than ``clip_sigma`` robust standard deviations (1.4826 MAD, floored
        at the chi² noise ``sqrt(2 / dof)``).
    margin : `int`, optional
        Extra pixels around each star stamp used while shifting it; the
        whole grown stamp must be on the image and free of bad pixels.

    Returns
    -------
    result : `PsfFitResult`

    Raises
    ------
    PsfFitError
        If fewer than ``max(min_stars, n_terms)`` usable stars remain.
    """
    if kernel_size % 2 == 0 or kernel_size < 3:
        raise PsfFitError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n_terms = len(term_orders(order))
    needed = max(min_stars, n_terms)
    half = kernel_size // 2
    in_half = half + margin
    finite = np.isfinite(x) & np.isfinite(y)
    cx, cy = central_pixel(x), central_pixel(y)
    dx, dy = np.where(finite, x - cx, 0.0), np.where(finite, y - cy, 0.0)

    data, inside = gather_stamps(image, origin, cx, cy, in_half)
    var, _ = gather_stamps(variance, origin, cx, cy, in_half)
    good = inside & np.isfinite(data) & np.isfinite(var)
    if mask is not None and bad_mask:
        msk, _ = gather_stamps(mask, origin, cx, cy, in_half)
        good &= (msk & bad_mask) == 0
    usable = finite & good.all(axis=(1, 2))
    n = x.size
    flux_out = np.full(n, np.nan)
    chi2_out = np.full(n, np.nan)
    if usable.sum() < needed:
        raise PsfFitError(f"only {int(usable.sum())} usable PSF stars, need at least {needed}")

    idx = np.flatnonzero(usable)
    data = data[idx].astype(np.float64)
    var = var[idx].astype(np.float64)
    core = slice(in_half - half, in_half + half + 1)
    # shift on the larger stamp, so that the periodic wrap of the FFT stays in the margin
    centred = fft_shift_stamps(data, -dx[idx], -dy[idx])[:, core, core]
    data_k = data[:, core, core]
    var_k = var[:, core, core]
    basis = chebyshev_basis(x[idx], y[idx], domain, order)
    flux = centred.sum(axis=(1, 2))
    if not np.all(flux > 0):
        bad_flux = np.flatnonzero(~(flux > 0))
        usable[idx[bad_flux]] = False
        keep = flux > 0
        idx, centred, data_k, var_k, basis, flux = (
            idx[keep],
            centred[keep],
            data_k[keep],
            var_k[keep],
            basis[keep],
            flux[keep],
        )
        if idx.size < needed:
            raise PsfFitError(f"only {idx.size} PSF stars with positive flux, need {needed}")
    mean_var = var_k.mean(axis=(1, 2))
    active = np.ones(idx.size, dtype=bool)
    dof = kernel_size * kernel_size - 1
    iteration = 0
    psf: PixelGridPsf | None = None
    for iteration in range(n_iter + 1):  # noqa: B007 - reported in the result
        for _ in range(2):  # model, then fluxes from the model, then model again
            values = (centred / flux[:, None, None]).reshape(idx.size, -1)
            weights = flux**2 / mean_var
            coefficients = _solve_model(basis[active], values[active], weights[active])
            psf = PixelGridPsf(
                coefficients.reshape(n_terms, kernel_size, kernel_size),
                domain,
                order,
            )
            kernels = psf.compute_kernel_images(x[idx], y[idx])
            flux = np.einsum("nij,nij->n", kernels, centred) / np.einsum(
                "nij,nij->n", kernels, kernels
            )
            flux = np.where(flux > 0, flux, centred.sum(axis=(1, 2)))
        models = psf.compute_images(x[idx], y[idx]) * flux[:, None, None]
        chi2 = ((data_k - models) ** 2 / var_k).sum(axis=(1, 2)) / dof
        med = np.median(chi2[active])
        scatter = 1.4826 * np.median(np.abs(chi2[active] - med))
        scatter = max(scatter, np.sqrt(2.0 / dof))
        reject = active & (chi2 > med + clip_sigma * scatter)
        if iteration == n_iter or not reject.any() or (active & ~reject).sum() < needed:
            break
        active &= ~reject
    assert psf is not None
    used = np.zeros(n, dtype=bool)
    used[idx[active]] = True
    flux_out[idx] = flux
    chi2_out[idx] = chi2
    return PsfFitResult(
        psf=psf, usable=usable, used=used, flux=flux_out, chi2=chi2_out, n_iter=iteration
    )
