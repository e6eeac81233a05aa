"""Benchmark: difference imaging and detection on a 4k x 4k detector, scored against truth.

Uses the data of ``bench/dcr/bench_template.py`` (same simulator config, same
root, simulated on first use).  The DCR template is built once with
`GetDcrTemplateTask` and cached in ``ROOT/diffim_bench_template.fits``
(``--rebuild-template`` builds it again, e.g. after the warper changed).
Timed, CPU and wall seconds (best of ``--repeat`` runs):

* difference: `SubtractImagesTask.run` (kernel fit on stars, convolution);
* detection: `DetectAndMeasureTask.run` (two passes, PSF fluxes, flags).

Science (against the simulator's truth): completeness of the simulated
changes per bin of expected S/N, and spurious DiaSources (far from every
changing source).  ``--profile`` prints a cProfile of one run of both stages.

Run:  python bench/diffim/bench_diffim.py [--root DIR] [--size 4096] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dcr"))
from bench_template import simulate  # noqa: E402  (the same 4k survey as bench/dcr)

from tasks.data.layout import DataLayout
from tasks.dcr.get_template import GetDcrTemplateTask, layout_coadd_refs
from tasks.diffim.detect import DetectAndMeasureTask
from tasks.diffim.evaluate import score_detections
from tasks.diffim.subtract import SubtractImagesTask
from tasks.images import Exposure
from tasks.simulate.sources import mean_fluxes


def template_for(layout: DataLayout, science: Exposure, rebuild: bool) -> Exposure:
    """The DCR template of the benchmark visit (cached as FITS)."""
    path = layout.root / "diffim_bench_template.fits"
    if path.exists() and not rebuild:
        return layout.read_exposure_file(path)
    info = science.visit_info
    refs = layout_coadd_refs(layout, info.band)
    template = GetDcrTemplateTask().make_template(refs, science.bbox, science.wcs, info).template
    layout.write_exposure_file(template, path)
    return template


def timed(func, *args, **kwargs):
    """Run ``func``; return (result, CPU seconds, wall seconds)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="data directory (cached)")
    parser.add_argument("--size", type=int, default=4096, help="detector size, pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (best reported)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--rebuild-template", action="store_true", help="ignore the cache")
    args = parser.parse_args()
    root = args.root or Path(tempfile.gettempdir()) / f"bench_dcr_{args.size}"
    layout = simulate(root, args.size)
    visit = layout.visits()[0]
    science = layout.read_exposure(visit, 0)
    template = template_for(layout, science, args.rebuild_template)
    info = science.visit_info
    print(
        f"detector {science.bbox.width}x{science.bbox.height}, band {info.band}, "
        f"airmass {info.airmass:.2f}"
    )
    subtract, detect = SubtractImagesTask(), DetectAndMeasureTask()
    sub = det = None
    best = {"difference": [np.inf, np.inf], "detection": [np.inf, np.inf]}
    for _ in range(max(args.repeat, 1)):
        sub, cpu, wall = timed(subtract.run, template, science)
        best["difference"] = [min(best["difference"][0], cpu), min(best["difference"][1], wall)]
        det, cpu, wall = timed(detect.run, sub.difference, science)
        best["detection"] = [min(best["detection"][0], cpu), min(best["detection"][1], wall)]
    labels = {
        "difference": "difference (kernel fit + convolution)",
        "detection": "detection + measurement",
    }
    for key, (cpu, wall) in best.items():
        print(f"  {labels[key]:<40s} cpu {cpu:6.2f} s   wall {wall:6.2f} s")
    cpu = sum(v[0] for v in best.values())
    wall = sum(v[1] for v in best.values())
    print(
        f"  {'both (best of ' + str(args.repeat) + ')':<40s} cpu {cpu:6.2f} s   wall {wall:6.2f} s"
    )
    dia = det.diaSources
    print(
        f"  kernel: {sub.kernelMode}, {sub.nKernelStars} stars, sum {sub.kernelSum:.3f}; "
        f"{len(dia)} DiaSources ({det.nDipole} dipoles)"
    )
    truth = layout.read_truth_sources(visit, 0)
    objects = layout.read_truth_objects().set_index("objectId")
    index = objects.index.get_indexer(truth["objectId"])
    template_flux = mean_fluxes(objects.reset_index(), info.band)[index]
    score = score_detections(dia, sub.difference, truth, template_flux)
    print(
        f"  spurious DiaSources: {score.n_spurious} "
        f"(without saturated/suspect/bad/cr flags: {score.n_spurious_unflagged})"
    )
    print("  completeness of the simulated changes by expected |S/N|:")
    for row in score.completeness().itertuples():
        print(f"    {row.lo:5.1f} - {row.hi:5.1f}: {row.found:4d} / {row.n:4d}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        sub = subtract.run(template, science)
        detect.run(sub.difference, science)
        profiler.disable()
        stats = pstats.Stats(profiler).sort_stats("tottime")
        stats.print_stats(30)


if __name__ == "__main__":
    main()
