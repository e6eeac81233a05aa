"""Registration noise of a difference image and the corrected detection significance.

A small misregistration between the science image and the matched template
(astrometric error, differential chromatic refraction that the template
model does not follow for a given star's colour, PSF-centroid errors) turns
every bright star into a dipole residual ``D ≈ -F δ·∇P``.  Zackay, Ofek &
Gal-Yam (2016, ApJ 830, 27, sect. 3.3) add the variance of that residual
to the score image: with random shifts of covariance ``diag(σx², σy²)``
the PSF-filtered difference gets the extra variance
``σx² (∂S/∂x)² + σy² (∂S/∂y)²``, where ``S`` is the PSF-filtered image of
the sky (here the science image: static stars dominate it).  Their
corrected score ``S_corr`` is what a ZOGY pipeline thresholds.

At the peak of a point source the gradient of its own filtered image is
zero, so a transient, a variable star or a moving object keeps its
significance; the lobes of a misregistered star, where the gradient is
largest, do not reach the threshold.

``σ`` is measured on the images themselves: the shifts of bright
unsaturated stars of the science image, fitted on the difference image
(``δ = -<∂P, D> / (F ||∂P||²)``), and the maximum-likelihood scatter of
those shifts beyond their shot noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import signal

from tasks.diffim.measure import extract_stamps
from tasks.diffim.pixel_loops import find_peaks_sparse, pixel_significance

__all__ = [
    "RegistrationNoise",
    "corrected_significance",
    "estimate_registration_noise",
    "filtered_with_gradients",
    "flux_change_significance",
    "nearest_bright_source",
    "offset_source_significance",
]


@dataclass
class RegistrationNoise:
    """Measured registration noise of a difference image.

    Attributes
    ----------
    sigma_x, sigma_y : `float`
        Shift scatter (pixels) along columns and rows.
    n_stars : `int`
        Stars used.
    """

    sigma_x: float
    sigma_y: float
    n_stars: int


def filtered_with_gradients(
    image: np.ndarray,
    unusable: np.ndarray,
    kernel: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSF-filtered value and its gradient at integer pixels (correlation with ``P``, ``∂P``).

    Parameters
    ----------
    image : `numpy.ndarray`
        Image (unusable pixels are taken as zero, as in the filtered image).
    unusable : `numpy.ndarray` of bool
        Pixels to ignore.
    kernel : `numpy.ndarray`
        Filter kernel (odd square, sum 1).
    ix, iy : `numpy.ndarray` of int
        Pixels.

    Returns
    -------
    value, grad_x, grad_y : `numpy.ndarray`
        ``sum(P D)``, ``d/dx`` and ``d/dy`` of it.
    """
    ix = np.asarray(ix, dtype=np.int64)
    iy = np.asarray(iy, dtype=np.int64)
    k = kernel.shape[0]
    stamps = extract_stamps(image, ix, iy, k, fill=0.0).astype(np.float64)
    good = extract_stamps(~unusable, ix, iy, k, fill=False)
    stamps = np.where(good & np.isfinite(stamps), stamps, 0.0)
    # f(x) = sum_u P(u) I(x + u)  =>  df/dx = -sum_u (dP/du)(u) I(x + u)
    dky, dkx = np.gradient(kernel)
    value = np.einsum("nij,ij->n", stamps, kernel)
    grad_x = -np.einsum("nij,ij->n", stamps, dkx)
    grad_y = -np.einsum("nij,ij->n", stamps, dky)
    return value, grad_x, grad_y


def corrected_significance(
    filtered: np.ndarray,
    filtered_variance: np.ndarray,
    grad_x: np.ndarray,
    grad_y: np.ndarray,
    noise: RegistrationNoise | None,
) -> np.ndarray:
    """Return ``filtered / sqrt(filtered_variance + σx² gx² + σy² gy²)``."""
    variance = np.asarray(filtered_variance, dtype=np.float64)
    if noise is not None:
        variance = variance + noise.sigma_x**2 * grad_x**2 + noise.sigma_y**2 * grad_y**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, filtered / np.sqrt(variance), 0.0)


def estimate_registration_noise(
    difference: np.ndarray,
    difference_variance: np.ndarray,
    science: np.ndarray,
    science_variance: np.ndarray,
    unusable: np.ndarray,
    kernel: np.ndarray,
    *,
    min_pixel_snr: float = 10.0,
    max_stars: int = 500,
    min_stars: int = 5,
) -> RegistrationNoise | None:
    """Measure the shift scatter between the science image and the matched template.

    Bright stars are the local maxima of ``science / sqrt(variance)`` above
    ``min_pixel_snr`` (brightest first) whose stamps hold no unusable pixel.
    Each star's shift is fitted on the difference image with the derivative
    of the PSF: ``δx = -<∂xP, D> / (F ||∂xP||²)`` with ``F`` its PSF flux,
    and likewise along y; its shot-noise variance follows from the
    difference variance.  The registration scatter is the maximum-likelihood
    ``σ`` of ``δ ~ N(0, σ² + noise)`` over both axes (one isotropic value),
    with 4-sigma outliers (variable stars, blends) clipped.

    Parameters
    ----------
    difference, difference_variance : `numpy.ndarray`
        Difference image and its variance.
    science, science_variance : `numpy.ndarray`
        Science image and its variance (same grid).
    unusable : `numpy.ndarray` of bool
        Pixels to ignore (saturated, bad, no data...).
    kernel : `numpy.ndarray`
        PSF kernel (odd square, sum 1).
    min_pixel_snr : `float`, optional
        Peak-pixel S/N of the stars used.
    max_stars : `int`, optional
        Most stars used (brightest first).
    min_stars : `int`, optional
        Fewer usable stars: no estimate (`None`).

    Returns
    -------
    noise : `RegistrationNoise` or `None`
    """
    pixel_snr = pixel_significance(science, science_variance, unusable)
    half = kernel.shape[0] // 2
    iy, ix, _, _, _ = find_peaks_sparse(pixel_snr, min_pixel_snr, half, (1,))[0]
    if len(ix) < min_stars:
        return None
    order = np.argsort(-pixel_snr[iy, ix], kind="stable")
    ix, iy = ix[order], iy[order]
    height, width = science.shape
    k = kernel.shape[0]
    inside = (ix >= half) & (ix < width - half) & (iy >= half) & (iy < height - half)
    ix, iy = ix[inside], iy[inside]
    clean = ~extract_stamps(unusable, ix, iy, k, fill=True).any(axis=(1, 2))
    ix, iy = ix[clean][:max_stars], iy[clean][:max_stars]
    if len(ix) < min_stars:
        return None
    sci = extract_stamps(science, ix, iy, k).astype(np.float64)
    dif = extract_stamps(difference, ix, iy, k).astype(np.float64)
    var = extract_stamps(difference_variance, ix, iy, k).astype(np.float64)
    if not (np.isfinite(sci).all() and np.isfinite(dif).all() and np.isfinite(var).all()):
        ok = np.isfinite(sci).all(axis=(1, 2)) & np.isfinite(dif).all(axis=(1, 2))
        ok &= np.isfinite(var).all(axis=(1, 2))
        sci, dif, var = sci[ok], dif[ok], var[ok]
        if len(sci) < min_stars:
            return None
    flux = np.einsum("nij,ij->n", sci, kernel) / float((kernel**2).sum())
    dky, dkx = np.gradient(kernel)
    shifts, noise_vars = [], []
    for dk in (dkx, dky):
        norm = float((dk**2).sum())
        shifts.append(-np.einsum("nij,ij->n", dif, dk) / (flux * norm))
        noise_vars.append(np.einsum("nij,ij->n", var, dk**2) / (flux * norm) ** 2)
    sigma = _shift_scatter(np.concatenate(shifts), np.concatenate(noise_vars))
    return RegistrationNoise(sigma, sigma, len(sci))


def _shift_scatter(shift: np.ndarray, noise_var: np.ndarray, clip: float = 4.0) -> float:
    """Maximum-likelihood ``σ`` of ``shift ~ N(0, σ² + noise_var)``, outliers clipped.

    The shifts are taken about zero (a common residual shift is part of the
    registration error).  Shifts more than ``clip`` of their total sigma away
    (variable stars, blends) are dropped and ``σ`` refitted.
    """
    grid = np.concatenate([[0.0], np.geomspace(1e-4, 2.0, 400)])
    keep = np.ones(shift.size, dtype=bool)
    sigma = 0.0
    for _ in range(5):
        total = grid[:, None] ** 2 + noise_var[None, keep]
        loglike = -0.5 * np.sum(np.log(total) + shift[None, keep] ** 2 / total, axis=1)
        sigma = float(grid[np.argmax(loglike)])
        new_keep = np.abs(shift) <= clip * np.sqrt(sigma**2 + noise_var)
        if np.array_equal(new_keep, keep) or new_keep.sum() < 4:
            break
        keep = new_keep
    return sigma


def flux_change_significance(
    difference: np.ndarray,
    difference_variance: np.ndarray,
    science: np.ndarray,
    unusable: np.ndarray,
    kernel: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    *,
    search: int = 3,
    psf_images: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Significance of a flux change of a science source near each peak, shift fitted out.

    A variable star whose change is small next to its flux shows, besides
    the change ``ΔF P``, the registration dipole of its full flux, so its
    difference peak sits on the dipole's gradient (even a few pixels away)
    and the corrected score alone would drop it.  Here the PSF-filtered
    science image is searched within ``search`` pixels of the peak for its
    maximum (the source); if that maximum is inside the square (not on its
    border) and the source's central 5 x 5 pixels are usable, the
    difference stamp around it is fitted with ``a P + bx ∂xP + by ∂yP`` (the
    PSF at the source's sub-pixel position; weights ``1 / variance``), and
    ``a / σ_a`` (the flux change, with the shift as a free nuisance) is
    returned.  A pure registration residual
    has ``a ≈ 0``.

    Parameters
    ----------
    difference, difference_variance : `numpy.ndarray`
        Difference image and its variance.
    science : `numpy.ndarray`
        Science image (same grid).
    unusable : `numpy.ndarray` of bool
        Pixels to ignore.
    kernel : `numpy.ndarray`
        PSF kernel (odd square, sum 1).
    ix, iy : `numpy.ndarray` of int
        Peak pixels.
    search : `int`, optional
        Half-size of the square searched for the source's peak.
    psf_images : callable, optional
        ``(x, y) -> (n, K, K)`` PSF images at sub-pixel array positions (as
        for `tasks.diffim.measure.psf_fluxes`); the fit uses them (cut to
        the kernel's size) at the source's position, otherwise ``kernel``.

    Returns
    -------
    significance : `numpy.ndarray`
        ``a / σ_a``; 0 where no usable source peak was found.
    x, y : `numpy.ndarray`
        The source's position (sub-pixel, from the filtered science image;
        the peak's own pixel where no source was found).
    """
    ix = np.asarray(ix, dtype=np.int64)
    iy = np.asarray(iy, dtype=np.int64)
    out = np.zeros(len(ix))
    if not len(ix):
        return out, ix.copy(), iy.copy()
    k = kernel.shape[0]
    side = 2 * search + 1
    offsets = np.arange(-search, search + 1)
    # filtered science on the search square of every peak
    # (one stamp each, correlated with the kernel: 'valid' part)
    big = side + k - 1
    stamps = extract_stamps(science, ix, iy, big, fill=0.0).astype(np.float64)
    usable = extract_stamps(~unusable, ix, iy, big, fill=False)
    stamps = np.where(usable & np.isfinite(stamps), stamps, 0.0)
    values = signal.fftconvolve(stamps, kernel[None, ::-1, ::-1], mode="valid", axes=(1, 2))
    flat = values.reshape(len(ix), -1).argmax(axis=1)
    row, col = np.divmod(flat, side)
    interior = (row > 0) & (row < side - 1) & (col > 0) & (col < side - 1)
    sx, sy = ix + offsets[col], iy + offsets[row]
    core = extract_stamps(unusable, sx, sy, 5, fill=True).any(axis=(1, 2))
    # sub-pixel position of the source: Gaussian (log-parabola) through the
    # filtered science, a parabola where values are not positive
    n = np.arange(len(ix))
    r, c = np.clip(row, 1, side - 2), np.clip(col, 1, side - 2)

    def vertex(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        positive = (minus > 0) & (centre > 0) & (plus > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lm, lc, lp = (np.log(np.where(positive, v, 1.0)) for v in (minus, centre, plus))
            log_step = 0.5 * (lm - lp) / (lm - 2.0 * lc + lp)
            step = 0.5 * (minus - plus) / (minus - 2.0 * centre + plus)
        return np.clip(np.nan_to_num(np.where(positive, log_step, step)), -0.5, 0.5)

    fx = sx + vertex(values[n, r, c - 1], values[n, r, c], values[n, r, c + 1])
    fy = sy + vertex(values[n, r - 1, c], values[n, r, c], values[n, r + 1, c])
    # model images at the source's sub-pixel position: a centring error o
    # would leak the (large) shift term into the flux term at order F δ o
    if psf_images is not None:
        half = k // 2
        images = psf_images(fx, fy)
        centre = images.shape[-1] // 2
        if centre >= half:
            cut = slice(centre - half, centre + half + 1)
            images = images[:, cut, cut]
            images = images / images.sum(axis=(1, 2), keepdims=True)
        else:
            images = np.broadcast_to(kernel, (len(ix), k, k))
    else:
        images = np.broadcast_to(kernel, (len(ix), k, k))
    gy_img, gx_img = np.gradient(images, axis=(1, 2))
    model = np.stack([images, gx_img, gy_img], axis=1).reshape(len(ix), 3, -1)
    data = extract_stamps(difference, sx, sy, k, fill=0.0).astype(np.float64).reshape(len(ix), -1)
    var = extract_stamps(difference_variance, sx, sy, k, fill=np.inf).astype(np.float64)
    good = extract_stamps(~unusable, sx, sy, k, fill=False).reshape(len(ix), -1)
    var = var.reshape(len(ix), -1)
    good &= np.isfinite(data) & np.isfinite(var) & (var > 0)
    weight = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
    data = np.where(good, data, 0.0)
    normal = np.einsum("npm,nqm,nm->npq", model, model, weight)
    rhs = np.einsum("npm,nm->np", model, weight * data)
    enough = interior & ~core & (good.sum(axis=1) >= 0.5 * k * k)
    for i in np.flatnonzero(enough):
        try:
            cov = np.linalg.inv(normal[i])
        except np.linalg.LinAlgError:
            continue
        amplitude = cov[0] @ rhs[i]
        if cov[0, 0] > 0:
            out[i] = amplitude / np.sqrt(cov[0, 0])
    found = out != 0
    return out, np.where(found, fx, ix), np.where(found, fy, iy)


def _place(canvas: np.ndarray, image: np.ndarray, x0: int, y0: int) -> None:
    """Add ``image`` into ``canvas`` with its first pixel at ``(x0, y0)`` (clipped)."""
    h, w = canvas.shape
    k0, k1 = image.shape
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(k0, h - y0), min(k1, w - x0)
    if ye > ys and xe > xs:
        canvas[y0 + ys : y0 + ye, x0 + xs : x0 + xe] += image[ys:ye, xs:xe]


def _refine_position(
    image: np.ndarray,
    variance: np.ndarray,
    unusable: np.ndarray,
    psf_images: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: float,
    y: float,
    half: int,
    steps: int = 3,
) -> tuple[float, float]:
    """Refine a point source's position by Gauss-Newton steps of ``F P + b·∇P`` (±1 px each)."""
    height, width = image.shape
    x0, y0 = x, y
    for _ in range(steps):
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if cx - half < 0 or cy - half < 0 or cx + half >= width or cy + half >= height:
            return x0, y0
        window = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
        data = image[window].astype(np.float64)
        var = variance[window].astype(np.float64)
        good = ~unusable[window] & np.isfinite(data) & np.isfinite(var) & (var > 0)
        weight = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0).ravel()
        model_image = psf_images(np.array([x]), np.array([y]))[0]
        gy, gx = np.gradient(model_image)
        model = np.stack([model_image.ravel(), gx.ravel(), gy.ravel()])
        try:
            coef = np.linalg.solve(
                (model * weight) @ model.T, model @ (weight * np.where(good, data, 0.0).ravel())
            )
        except np.linalg.LinAlgError:
            return x0, y0
        if coef[0] <= 0:
            return x0, y0
        x += float(np.clip(-coef[1] / coef[0], -1.0, 1.0))
        y += float(np.clip(-coef[2] / coef[0], -1.0, 1.0))
    if np.hypot(x - x0, y - y0) > 2.0:  # wandered off: keep the science position
        return x0, y0
    return x, y


def offset_source_significance(
    difference: np.ndarray,
    difference_variance: np.ndarray,
    unusable: np.ndarray,
    psf_images: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tx: np.ndarray,
    ty: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    template: np.ndarray | None = None,
    science: np.ndarray | None = None,
    shift_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Significance of a new point source next to a science source, the neighbour fitted out.

    A transient a few pixels from a bright star (a supernova next to its
    host) sits where the star's filtered image is steep, so the
    registration-noise term ``σ² |∇S|²`` swamps it, and the flux change fit
    of `flux_change_significance` attributes it to the star.  Here the
    difference stamp covering both is fitted with
    ``a P(t) + c P(s) + bx ∂xP(s) + by ∂yP(s)``: a point source at ``t``
    next to the science source at ``s`` whose own flux change and
    registration dipole are free nuisances (weights ``1 / variance``).  A
    pure registration residual of the star, or a change of the star
    itself, gives ``a ≈ 0``; the fit also refines ``t`` by two Gauss-Newton
    steps on the source's position (``∂P(t)`` terms), since the peak of the
    sum is pulled by the neighbour's dipole.

    Parameters
    ----------
    difference, difference_variance : `numpy.ndarray`
        Difference image and its variance.
    unusable : `numpy.ndarray` of bool
        Pixels to ignore.
    psf_images : callable
        ``(x, y) -> (n, K, K)`` PSF images at sub-pixel array positions,
        centred on the nearest pixel.
    tx, ty : `numpy.ndarray`
        Positions of the candidate sources (array coordinates).
    sx, sy : `numpy.ndarray`
        Positions of the neighbouring science sources.

    template : `numpy.ndarray`, optional
        The matched template (science minus difference): the same model,
        at the final positions, is fitted to it too.
    science : `numpy.ndarray`, optional
        The science image: with ``shift_sigma`` it gives the neighbour's
        flux ``F`` (a fit of ``P(t)`` and ``P(s)``), and the neighbour's
        shift gets a Gaussian prior of ``shift_sigma`` pixels per axis
        (``b ~ N(0, (F shift_sigma)²)``).  Without it the shift is free, and
        a source within about a PSF sigma of the neighbour is nearly
        degenerate with a shifted, brighter neighbour.
    shift_sigma : `float`, optional
        Registration noise (pixels) for that prior; 0: no prior.

    Returns
    -------
    significance : `numpy.ndarray`
        ``a / σ_a`` (0 where the stamp leaves the image or the fit is singular).
    x, y : `numpy.ndarray`
        Refined positions of the candidate sources.
    template_ratio : `numpy.ndarray`
        The template fit's ``a`` over the difference fit's ``a`` (NaN
        without ``template`` or where the fit failed): about 0 for a new
        source, large for the residual of a static one.
    star_x, star_y : `numpy.ndarray`
        The neighbours' positions used (refined on ``template`` when given).
    """
    tx = np.asarray(tx, dtype=np.float64).copy()
    ty = np.asarray(ty, dtype=np.float64).copy()
    sx = np.asarray(sx, dtype=np.float64)
    sy = np.asarray(sy, dtype=np.float64)
    out = np.zeros(len(tx))
    flux = np.zeros(len(tx))
    t_flux = np.full(len(tx), np.nan)
    if not len(tx):
        return out, tx, ty, t_flux, sx.copy(), sy.copy()
    height, width = difference.shape
    sx, sy = sx.copy(), sy.copy()
    k = psf_images(sx[:1], sy[:1]).shape[-1]
    half_k = k // 2
    for i in range(len(tx)):
        if template is not None:
            # the neighbour's position from the matched template, which holds
            # it without the new source (the science peak is pulled toward it)
            sx[i], sy[i] = _refine_position(
                template, difference_variance, unusable, psf_images, sx[i], sy[i], half_k
            )
    star_images = psf_images(sx, sy)
    for i in range(len(tx)):
        cx = int(np.floor(0.5 * (tx[i] + sx[i]) + 0.5))
        cy = int(np.floor(0.5 * (ty[i] + sy[i]) + 0.5))
        half = half_k + int(np.ceil(0.5 * np.hypot(tx[i] - sx[i], ty[i] - sy[i])))
        x0, y0 = cx - half, cy - half
        side = 2 * half + 1
        if x0 < 0 or y0 < 0 or x0 + side > width or y0 + side > height:
            continue
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        data = difference[window].astype(np.float64)
        var = difference_variance[window].astype(np.float64)
        good = ~unusable[window] & np.isfinite(data) & np.isfinite(var) & (var > 0)
        if good.sum() < 0.5 * k * k:
            continue
        weight = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0).ravel()
        data = np.where(good, data, 0.0).ravel()
        star = np.zeros((side, side))
        _place(
            star,
            star_images[i],
            int(np.floor(sx[i] + 0.5)) - half_k - x0,
            int(np.floor(sy[i] + 0.5)) - half_k - y0,
        )
        star_gy, star_gx = np.gradient(star)
        prior = 0.0
        if science is not None and shift_sigma > 0:
            first = np.zeros((side, side))
            _place(
                first,
                psf_images(tx[i : i + 1], ty[i : i + 1])[0],
                int(np.floor(tx[i] + 0.5)) - half_k - x0,
                int(np.floor(ty[i] + 0.5)) - half_k - y0,
            )
            sdata = science[window].astype(np.float64).ravel()
            sdata = np.where(good.ravel() & np.isfinite(sdata), sdata, 0.0)
            pair = np.stack([first.ravel(), star.ravel()])
            try:
                star_flux = np.linalg.solve((pair * weight) @ pair.T, pair @ (weight * sdata))[1]
            except np.linalg.LinAlgError:
                star_flux = 0.0
            if star_flux > 0:
                prior = 1.0 / (star_flux * shift_sigma) ** 2
        for step in range(3):
            source = np.zeros((side, side))
            _place(
                source,
                psf_images(tx[i : i + 1], ty[i : i + 1])[0],
                int(np.floor(tx[i] + 0.5)) - half_k - x0,
                int(np.floor(ty[i] + 0.5)) - half_k - y0,
            )
            gy, gx = np.gradient(source)
            terms = [source, star, star_gx, star_gy]
            if step < 2:
                terms += [gx, gy]
            model = np.stack([t.ravel() for t in terms])
            normal = (model * weight) @ model.T
            normal[2, 2] += prior
            normal[3, 3] += prior
            try:
                cov = np.linalg.inv(normal)
            except np.linalg.LinAlgError:
                break
            coef = cov @ (model @ (weight * data))
            if step == 2:
                if cov[0, 0] > 0:
                    out[i] = coef[0] / np.sqrt(cov[0, 0])
                    if template is not None:
                        tdata = template[window].astype(np.float64).ravel()
                        tdata = np.where(good.ravel() & np.isfinite(tdata), tdata, 0.0)
                        t_flux[i] = (cov @ (model @ (weight * tdata)))[0]
                    flux[i] = coef[0]
                break
            if coef[0] == 0:  # no flux: nothing to move
                break
            # a P(t + d) ~ a P(t) - a d.∇P(t): the gradient coefficients are -a d
            tx[i] += np.clip(-coef[4] / coef[0], -1.0, 1.0)
            ty[i] += np.clip(-coef[5] / coef[0], -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(flux != 0, t_flux / flux, np.nan)
    return out, tx, ty, ratio, sx, sy


def nearest_bright_source(
    image: np.ndarray,
    unusable: np.ndarray,
    kernel: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    min_value: np.ndarray,
    *,
    search: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest local maximum of the PSF-filtered ``image`` above ``min_value`` around each pixel.

    Used to find the bright neighbour of a candidate source in the matched
    template: the neighbour is the nearest source much brighter than the
    candidate (not the brightest in the square, which may be another star).

    Parameters
    ----------
    image : `numpy.ndarray`
        Image to search (e.g. the matched template).
    unusable : `numpy.ndarray` of bool
        Pixels to ignore.
    kernel : `numpy.ndarray`
        PSF kernel (odd square, sum 1).
    ix, iy : `numpy.ndarray` of int
        Centres of the searches.
    min_value : `numpy.ndarray`
        Smallest filtered value of an accepted maximum, per centre.
    search : `int`
        Half-size of the square searched.

    Returns
    -------
    found : `numpy.ndarray` of bool
        A maximum inside the square (not on its border) was found.
    x, y : `numpy.ndarray`
        Its pixel (the centre where none was found).
    """
    ix = np.asarray(ix, dtype=np.int64)
    iy = np.asarray(iy, dtype=np.int64)
    n = len(ix)
    found = np.zeros(n, dtype=bool)
    x, y = ix.astype(np.float64), iy.astype(np.float64)
    if not n:
        return found, x, y
    k = kernel.shape[0]
    side = 2 * search + 1
    big = side + k - 1
    stamps = extract_stamps(image, ix, iy, big, fill=0.0).astype(np.float64)
    usable = extract_stamps(~unusable, ix, iy, big, fill=False)
    stamps = np.where(usable & np.isfinite(stamps), stamps, 0.0)
    values = signal.fftconvolve(stamps, kernel[None, ::-1, ::-1], mode="valid", axes=(1, 2))
    inner = values[:, 1:-1, 1:-1]
    is_max = np.ones_like(inner, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                shifted = values[:, 1 + dy : side - 1 + dy, 1 + dx : side - 1 + dx]
                is_max &= inner >= shifted
    is_max &= inner >= np.asarray(min_value, dtype=np.float64)[:, None, None]
    offsets = np.arange(1, side - 1) - search
    dist2 = offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2
    dist2 = np.where(is_max, dist2, np.iinfo(np.int64).max)
    flat = dist2.reshape(n, -1).argmin(axis=1)
    row, col = np.divmod(flat, side - 2)
    found = is_max.reshape(n, -1)[np.arange(n), flat]
    x = np.where(found, ix + offsets[col], ix).astype(np.float64)
    y = np.where(found, iy + offsets[row], iy).astype(np.float64)
    return found, x, y
