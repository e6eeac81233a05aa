"""Benchmark: render a 4k x 4k detector with 10,000 point sources.

Measures, in one run on the same machine:

- ``ours``: `tasks.simulate.render_sources` (vectorised PSF stamps + bincount),
  all sources;
- ``ours_exposure``: `tasks.simulate.render_exposure` (the above + Poisson
  noise, read noise, saturation, bad columns, cosmic rays, metadata);
- ``astropy_modeling``: the same double-Gaussian sources rendered one by one
  with astropy.modeling (two ``Gaussian2D`` models per source, each
  evaluated only inside its bounding box with ``Model.render``), on a subset
  and scaled to all sources;
- ``naive_full_image``: each source evaluated over the whole image (the
  per-source, full-image loop the vectorised renderer replaces), on a small
  subset and scaled.

Reported: seconds for 10,000 sources and the ratio reference / ours.

Usage::

    python bench/render/bench_render.py [--size 4096] [--n-sources 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from astropy.modeling.models import Gaussian2D

from tasks.images import Box2I, DoubleGaussianPsf, PhotoCalib
from tasks.simulate import render_exposure, render_sources

_CPU: dict[str, float] = {}


def _time(fn, repeats: int, name: str | None = None) -> float:
    """Median wall time of ``repeats`` calls; records the median CPU time under ``name``."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    if name is not None:
        _CPU[name] = float(np.median(cpu))
    return float(np.median(wall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--n-sources", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--astropy-subset", type=int, default=300)
    parser.add_argument("--naive-subset", type=int, default=5)
    parser.add_argument("--json", help="Write the results to this file.")
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    size, n = args.size, args.n_sources
    bbox = Box2I(0, 0, size, size)
    psf = DoubleGaussianPsf(
        1.6, center=(size / 2, size / 2), scale=size / 2, gradient=(0.06, 0.03), curvature=0.03
    )
    x = rng.uniform(-10, size + 10, n)
    y = rng.uniform(-10, size + 10, n)
    flux = 10 ** rng.uniform(2, 5.5, n)

    ours = _time(lambda: render_sources(bbox, psf, x, y, flux), args.repeats, "ours")
    exposure = _time(
        lambda: render_exposure(
            bbox,
            None,
            psf,
            x,
            y,
            flux,
            photo_calib=PhotoCalib(1.0),
            sky=300.0,
            read_noise=5.0,
            rng=np.random.default_rng(2),
            saturation=60000.0,
            n_bad_columns=2,
            n_cosmic_rays=20,
        ),
        1,
        "exposure",
    )

    # astropy.modeling reference: one compound model per source, rendered in its bounding box
    k = psf.kernel_size
    half = k // 2
    m = min(args.astropy_subset, n)
    sub = slice(0, m)

    def astropy_render() -> np.ndarray:
        out = np.zeros(bbox.shape)
        s1 = psf.core_sigma(x[sub], y[sub])
        for xx, yy, ff, ss in zip(x[sub], y[sub], flux[sub], s1, strict=True):
            amp_core = ff * (1 - psf.wing_fraction) / (2 * np.pi * ss**2)
            ws = ss * psf.wing_ratio
            amp_wing = ff * psf.wing_fraction / (2 * np.pi * ws**2)
            box = ((yy - half, yy + half), (xx - half, xx + half))
            # two single models: Model.render of a compound model returns garbage
            # (astropy 8), so each component is rendered on its own
            for model in (
                Gaussian2D(amp_core, xx, yy, ss, ss),
                Gaussian2D(amp_wing, xx, yy, ws, ws),
            ):
                model.bounding_box = box
                model.render(out)
        return out

    astropy_t = _time(astropy_render, 1, "astropy") * n / m
    # consistency: astropy's samples (pixel centres) vs our pixel integrals
    ours_sub = render_sources(bbox, psf, x[sub], y[sub], flux[sub])
    ref_sub = astropy_render()
    agreement = float(np.abs(ours_sub.sum() - ref_sub.sum()) / ours_sub.sum())

    yy_grid, xx_grid = np.mgrid[0:size, 0:size].astype(np.float64)
    q = min(args.naive_subset, n)

    def naive() -> None:
        out = np.zeros(bbox.shape)
        for xx, yy, ff in zip(x[:q], y[:q], flux[:q], strict=True):
            s = float(psf.core_sigma(xx, yy))
            r2 = (xx_grid - xx) ** 2 + (yy_grid - yy) ** 2
            out += ff * np.exp(-0.5 * r2 / s**2) / (2 * np.pi * s**2)

    naive_t = _time(naive, 1) * n / q

    results = {
        "machine": platform.processor() or platform.machine(),
        "image": f"{size}x{size}",
        "n_sources": n,
        "psf_kernel": k,
        "ours_render_sources_s": round(ours, 4),
        "ours_render_exposure_s": round(exposure, 4),
        "ours_render_sources_cpu_s": round(_CPU["ours"], 4),
        "ours_render_exposure_cpu_s": round(_CPU["exposure"], 4),
        "astropy_modeling_cpu_s_scaled": round(_CPU["astropy"] * n / m, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "astropy_modeling_s_scaled": round(astropy_t, 3),
        "astropy_subset": m,
        "naive_full_image_s_scaled": round(naive_t, 2),
        "naive_subset": q,
        "ratio_astropy_over_ours": round(astropy_t / ours, 1),
        "ratio_naive_over_ours": round(naive_t / ours, 1),
        "total_flux_rel_diff_vs_astropy": agreement,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
