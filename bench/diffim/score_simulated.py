"""Spurious detections and completeness of difference imaging on the simulator's tiny survey.

For every seed: simulate the tiny survey (one 512 x 512 detector, bands g and
r, ``--visits`` visits), build each visit's DCR template with
`GetDcrTemplateTask`, subtract, detect, and score the DiaSources against the
truth (`tasks.diffim.evaluate`).  Prints per visit the number of DiaSources,
the spurious ones (far from every changing source; with and without pixel
flags), the simulated changes above 5 sigma that were missed, and at the end
the completeness per bin of expected S/N over all visits.

Run:  python bench/diffim/score_simulated.py [--seeds 1 2 3] [--visits 4] [--verbose]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.dcr import CoaddRef, GetDcrTemplateTask
from tasks.diffim import DetectAndMeasureTask, SubtractImagesTask
from tasks.diffim.evaluate import score_detections
from tasks.simulate.config import SimulationConfig
from tasks.simulate.sources import mean_fluxes
from tasks.simulate.survey import simulate_survey


def process(seed: int, n_visits: int, root: Path, verbose: bool) -> list[dict]:
    """Simulate one survey and score every visit; return one row per visit."""
    config = SimulationConfig.tiny(n_visits=n_visits, bands=["g", "r"], seed=seed)
    truth = simulate_survey(config, root)
    layout = truth.layout
    skymap = layout.read_skymap()
    objects = truth.objects.set_index("objectId")
    rows = []
    for visit in layout.visits():
        exposure = layout.read_exposure(visit, 0)
        info = exposure.visit_info
        refs = []
        for tract, patch in layout.dcr_patches(info.band):
            pinfo = skymap[tract].patch_info(patch)
            for k in layout.dcr_subfilters(tract, patch, info.band):
                path = layout.dcr_coadd_path(tract, patch, info.band, k)
                data_id = {"tract": tract, "patch": patch, "subfilter": k}
                loader = functools.partial(layout.read_exposure_file, path)
                refs.append(CoaddRef(data_id, pinfo.outer_bbox, pinfo.wcs, loader))
        template = (
            GetDcrTemplateTask().make_template(refs, exposure.bbox, exposure.wcs, info).template
        )
        sub = SubtractImagesTask().run(template, exposure)
        dia = DetectAndMeasureTask().run(sub.difference, exposure).diaSources
        src = truth.sources[(truth.sources.visit == visit) & (truth.sources.detector == 0)]
        index = objects.index.get_indexer(src["objectId"])
        template_flux = mean_fluxes(objects.reset_index(), info.band)[index]
        score = score_detections(dia, sub.difference, src, template_flux)
        missed = score.missed(5.0)
        rows.append(
            {
                "seed": seed,
                "visit": visit,
                "band": info.band,
                "airmass": round(info.airmass, 2),
                "nDia": len(dia),
                "spurious": score.n_spurious,
                "unflagged": score.n_spurious_unflagged,
                "above5": int((np.abs(np.nan_to_num(score.snr)) >= 5).sum()),
                "missed5": len(missed),
                "_score": score,
            }
        )
        if verbose:
            sat = src["saturated"].to_numpy()
            flux = src["flux"].to_numpy()
            xs, ys = src["x"].to_numpy(), src["y"].to_numpy()
            for j in np.flatnonzero(score.spurious):
                d = np.hypot(xs - dia["x"].iat[j], ys - dia["y"].iat[j])
                near = int(np.argmin(d))
                print(
                    f"    spurious ({dia['x'].iat[j]:6.1f},{dia['y'].iat[j]:6.1f}) "
                    f"snr {dia['snr'].iat[j]:7.1f} dipole {dia['isDipole'].iat[j]!s:5} "
                    f"flags sat {dia['pixelFlags_saturated'].iat[j]!s:5} "
                    f"susp {dia['pixelFlags_suspect'].iat[j]!s:5} "
                    f"edge {dia['pixelFlags_edge'].iat[j]!s:5}; nearest truth "
                    f"{d[near]:5.1f} px, flux {flux[near]:10.0f} nJy, sat {sat[near]}"
                )
            for j in missed:
                print(
                    f"    missed {src['kind'].iat[j]} at ({xs[j]:6.1f},{ys[j]:6.1f}) "
                    f"expected snr {score.snr[j]:6.1f}"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3])
    parser.add_argument("--visits", type=int, default=4)
    parser.add_argument("--verbose", action="store_true", help="list spurious and missed")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows += process(seed, args.visits, Path(tmp) / f"seed{seed}", args.verbose)
            for row in rows[-args.visits :]:
                print({k: v for k, v in row.items() if not k.startswith("_")})
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    print(table.to_string(index=False))
    print(
        f"per detector: spurious mean {table.spurious.mean():.1f} "
        f"(max {table.spurious.max()}), unflagged mean {table.unflagged.mean():.1f} "
        f"(max {table.unflagged.max()}); missed above 5 sigma: {table.missed5.sum()} "
        f"of {table.above5.sum()}"
    )
    total = None
    for row in rows:
        part = row["_score"].completeness()
        total = (
            part
            if total is None
            else total.assign(n=total.n + part.n, found=total.found + part.found)
        )
    print("completeness by expected |S/N| (all visits):")
    for r in total.itertuples():
        print(f"  {r.lo:5.1f} - {r.hi:5.1f}: {r.found:4d} / {r.n:4d}")


if __name__ == "__main__":
    main()
