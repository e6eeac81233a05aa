"""Vectorised rendering of point sources, noise and detector defects.

Sources are drawn as PSF stamps (``Psf.compute_images``: one ``k × k`` stamp
per source, evaluated in one vectorised call) and scattered into the image
with `numpy.bincount`, so no Python loop runs over pixels or sources.
Sources spread by differential chromatic refraction (`DcrComponents`) get
one stamp each too, grown to hold all their components
(`tasks.simulate.chromatic.spread_stamps`).
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from tasks.core.base import Struct
from tasks.images.calib import PhotoCalib
from tasks.images.errors import ImageError
from tasks.images.exposure import Exposure
from tasks.images.geom import Box2I
from tasks.images.mask import MASK_DTYPE, MaskPlane
from tasks.images.psf import Psf, nearest_pixel
from tasks.images.visit_info import VisitInfo
from tasks.simulate.chromatic import DcrComponents, is_separable, spread_stamps

__all__ = ["render_sources", "add_noise", "add_defects", "render_exposure"]

_CHUNK = 16384


def render_sources(
    bbox: Box2I,
    psf: Psf,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    out: np.ndarray | None = None,
    *,
    components: DcrComponents | None = None,
) -> np.ndarray:
    """Return (or add into ``out``) the noiseless image of point sources.

    Parameters
    ----------
    bbox : `Box2I`
        Box of the image (parent coordinates).
    psf : `Psf`
        PSF model, evaluated at each source's position.
    x, y : `numpy.ndarray`
        Parent pixel positions of the sources' centroids.
    flux : `numpy.ndarray`
        Total flux of each source (in the image's units).  A source's stamp
        sums to its flux; the part falling outside ``bbox`` is lost.
    out : `numpy.ndarray`, optional
        Float array of shape ``bbox.shape`` to add into.
    components : `DcrComponents`, optional
        Each source's light split into components at offsets from ``(x, y)``
        (DCR): source ``i`` is drawn as ``Σ_j weight[i, j]`` times the PSF at
        ``(x[i] + dx[i, j], y[i] + dy[i, j])``.  Separable PSFs are drawn one
        grown stamp per source; any other PSF one stamp per component.

    Returns
    -------
    image : `numpy.ndarray`
        float64 image (``out`` itself when given).
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    flux = np.atleast_1d(np.asarray(flux, dtype=float))
    if not (x.shape == y.shape == flux.shape):
        raise ImageError("x, y and flux must have the same shape")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(flux))):
        raise ImageError("source positions and fluxes must be finite")
    if out is None:
        out = np.zeros(bbox.shape, dtype=np.float64)
    elif out.shape != bbox.shape:
        raise ImageError(f"out has shape {out.shape}, expected {bbox.shape}")
    if components is not None:
        if len(components) != x.size:
            raise ImageError(f"{len(components)} DCR component rows for {x.size} sources")
        if components.n_components == 1:
            x, y = x + components.dx[:, 0], y + components.dy[:, 0]
            flux, components = flux * components.weight[:, 0], None
        elif not is_separable(psf):
            # any PSF: each component is a point source of its own
            return render_sources(
                bbox,
                psf,
                (x[:, None] + components.dx).ravel(),
                (y[:, None] + components.dy).ravel(),
                (flux[:, None] * components.weight).ravel(),
                out,
            )
    half = psf.kernel_size // 2
    half_x = half_y = half
    if components is not None:
        # stamps grow to hold every component's own kernel
        reach_x = nearest_pixel(x[:, None] + components.dx) - nearest_pixel(x)[:, None]
        reach_y = nearest_pixel(y[:, None] + components.dy) - nearest_pixel(y)[:, None]
        half_x += int(np.abs(reach_x).max(initial=0))
        half_y += int(np.abs(reach_y).max(initial=0))
    # keep sources whose stamp touches the box
    keep = bbox.grown(max(half_x, half_y) + 1).contains(x, y) & (flux != 0)
    x, y, flux = x[keep], y[keep], flux[keep]
    if components is not None:
        components = components.select(keep)
    if x.size == 0:
        return out
    height, width = bbox.shape
    offsets_x = np.arange(-half_x, half_x + 1)
    offsets_y = np.arange(-half_y, half_y + 1)
    chunk = max(256, _CHUNK * (2 * half + 1) ** 2 // (offsets_x.size * offsets_y.size))
    rx = nearest_pixel(x) - bbox.x0
    ry = nearest_pixel(y) - bbox.y0
    # stamps wholly inside the image need no clipping: their index and weight
    # arrays are passed to bincount as flat views (no boolean compress)
    interior = (rx >= half_x) & (rx < width - half_x) & (ry >= half_y) & (ry < height - half_y)
    total = np.zeros(height * width, dtype=np.float64)
    for subset in (np.flatnonzero(interior), np.flatnonzero(~interior)):
        for start in range(0, subset.size, chunk):
            idx = subset[start : start + chunk]
            if components is None:
                stamps = psf.compute_images(x[idx], y[idx])
            else:
                sub = components.select(idx)
                stamps = spread_stamps(psf, x[idx], y[idx], sub, half_x, half_y)
            stamps *= flux[idx, None, None]
            rows = ry[idx, None] + offsets_y[None, :]  # (n, ky)
            cols = rx[idx, None] + offsets_x[None, :]  # (n, kx)
            flat = (rows * width)[:, :, None] + cols[:, None, :]
            if interior[idx[0]]:
                total += np.bincount(flat.ravel(), weights=stamps.ravel(), minlength=total.size)
                continue
            valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
                :, None, :
            ]
            total += np.bincount(flat[valid], weights=stamps[valid], minlength=total.size)
    out += total.reshape(height, width)
    return out


def add_noise(
    model: np.ndarray, sky: float, read_noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return a sky-subtracted noisy image and its variance.

    Each pixel collects a Poisson number of counts with mean ``model + sky``
    (gain 1), plus Gaussian read noise; the sky level is then subtracted.
    The variance plane is the expected variance, ``model + sky + read_noise²``.
    """
    if sky < 0 or read_noise < 0:
        raise ImageError("sky and read noise must be non-negative")
    expected = np.clip(model, 0.0, None) + sky
    counts = rng.poisson(expected).astype(np.float64)
    if read_noise > 0:
        counts += rng.normal(0.0, read_noise, size=model.shape)
    image = counts - sky
    variance = expected + read_noise**2
    return image, variance


def add_defects(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    saturation: float | None = None,
    n_bad_columns: int = 0,
    n_cosmic_rays: int = 0,
) -> Struct:
    """Saturate, add bad columns and cosmic rays, flagging them in ``mask`` (in place).

    Returns
    -------
    result : `tasks.core.base.Struct`
        ``bad_columns`` (column indices), ``cosmic_rays`` (``(n, 2)`` start
        pixels ``(row, col)``) and ``saturated`` (boolean pixel map).
    """
    height, width = image.shape
    saturated = np.zeros(image.shape, dtype=bool)
    if saturation is not None:
        saturated = image >= saturation
        image[saturated] = saturation
        mask[saturated] |= MaskPlane.SAT.value
    columns = rng.choice(width, size=min(n_bad_columns, width), replace=False)
    for col in np.sort(columns):
        # a hot column: a constant offset, flagged BAD
        image[:, col] += 500.0
        mask[:, col] |= MaskPlane.BAD.value
    starts = np.column_stack(
        [rng.integers(0, height, n_cosmic_rays), rng.integers(0, width, n_cosmic_rays)]
    )
    lengths = rng.integers(1, 8, n_cosmic_rays)
    angles = rng.uniform(0, 2 * np.pi, n_cosmic_rays)
    amplitudes = rng.uniform(300.0, 3000.0, n_cosmic_rays)
    steps = np.arange(8)
    rr = np.rint(starts[:, :1] + np.sin(angles)[:, None] * steps[None, :]).astype(int)
    cc = np.rint(starts[:, 1:] + np.cos(angles)[:, None] * steps[None, :]).astype(int)
    on = (steps[None, :] < lengths[:, None]) & (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
    amp = np.broadcast_to(amplitudes[:, None], rr.shape)
    np.add.at(image, (rr[on], cc[on]), amp[on])
    mask[rr[on], cc[on]] |= MaskPlane.CR.value
    return Struct(bad_columns=np.sort(columns), cosmic_rays=starts, saturated=saturated)


def render_exposure(
    bbox: Box2I,
    wcs: WCS | None,
    psf: Psf,
    x: np.ndarray,
    y: np.ndarray,
    flux_njy: np.ndarray,
    *,
    photo_calib: PhotoCalib,
    sky: float,
    read_noise: float,
    rng: np.random.Generator,
    saturation: float | None = None,
    n_bad_columns: int = 0,
    n_cosmic_rays: int = 0,
    visit_info: VisitInfo | None = None,
    detector: int | None = None,
    band: str | None = None,
    dtype: type = np.float32,
    components: DcrComponents | None = None,
    defect_rng: np.random.Generator | None = None,
) -> Struct:
    """Render a noisy single-visit exposure of point sources with known truth.

    Parameters
    ----------
    bbox, wcs, psf
        Geometry and PSF of the exposure.
    x, y : `numpy.ndarray`
        Parent pixel centroids of the sources.
    flux_njy : `numpy.ndarray`
        True fluxes in nJy (converted to counts with ``photo_calib``).
    photo_calib : `PhotoCalib`
        Calibration of the exposure.
    sky, read_noise : `float`
        Sky level (counts per pixel, subtracted) and read noise (counts).
    rng : `numpy.random.Generator`
        Source of randomness (noise, and defects unless ``defect_rng`` is given).
    saturation : `float`, optional
        Pixels at or above this (sky-subtracted counts) are clipped and flagged SAT.
    n_bad_columns, n_cosmic_rays : `int`, optional
        Defects to add (flagged BAD and CR).
    visit_info, detector, band
        Metadata attached to the exposure.
    dtype : `type`, optional
        Float type of the image and variance.
    components : `DcrComponents`, optional
        DCR components of each source (see `render_sources`); ``x, y`` are
        then the sources' flux-weighted mean positions.
    defect_rng : `numpy.random.Generator`, optional
        Source of the bad columns and cosmic rays, so that they do not move
        when the sources (and so the number of draws the noise takes) change.

    Returns
    -------
    result : `tasks.core.base.Struct`
        ``exposure`` (`Exposure`), ``model`` (noiseless float64 image in
        counts), ``source_saturated`` (per source: its central pixel is
        saturated), ``defects`` (from `add_defects`).
    """
    counts = photo_calib.nanojansky_to_instflux(flux_njy)
    model = render_sources(bbox, psf, x, y, counts, components=components)
    image, variance = add_noise(model, sky, read_noise, rng)
    mask = np.zeros(bbox.shape, dtype=MASK_DTYPE)
    defects = add_defects(
        image,
        mask,
        rng if defect_rng is None else defect_rng,
        saturation,
        n_bad_columns,
        n_cosmic_rays,
    )
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    inside = np.asarray(bbox.contains(x, y))
    source_saturated = np.zeros(x.shape, dtype=bool)
    if inside.any():
        rows = nearest_pixel(y[inside]) - bbox.y0
        cols = nearest_pixel(x[inside]) - bbox.x0
        source_saturated[inside] = defects.saturated[rows, cols]
    exposure = Exposure(
        image.astype(dtype),
        mask,
        variance.astype(dtype),
        wcs,
        bbox,
        psf=psf,
        photo_calib=photo_calib,
        visit_info=visit_info,
        detector=detector,
        band=band,
    )
    return Struct(
        exposure=exposure, model=model, source_saturated=source_saturated, defects=defects
    )
