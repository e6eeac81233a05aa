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
import yaml

from tasks.data.layout import DataLayout
from tasks.dcr import CoaddRef, GetDcrTemplateTask
from tasks.diffim import DetectAndMeasureTask, SubtractImagesTask
from tasks.diffim.evaluate import score_detections
from tasks.simulate.config import SimulationConfig
from tasks.simulate.sources import mean_fluxes
from tasks.simulate.survey import simulate_survey


def _tasks(overrides: list[str]) -> tuple[SubtractImagesTask, DetectAndMeasureTask]:
    """Tasks with ``subtract.FIELD=VALUE`` / ``detect.FIELD=VALUE`` config overrides."""
    subtract, detect = SubtractImagesTask(), DetectAndMeasureTask()
    for item in overrides:
        key, value = item.split("=", 1)
        which, field = key.split(".", 1)
        task = {"subtract": subtract, "detect": detect}[which]
        setattr(task.config, field, yaml.safe_load(value))
    return subtract, detect


def process(
    seed: int, n_visits: int, root: Path, verbose: bool, overrides: list[str]
) -> list[dict]:
    """Simulate one survey (unless already under ``root``) and score every visit."""
    if not (root / "visits.parquet").exists():
        config = SimulationConfig.tiny(n_visits=n_visits, bands=["g", "r"], seed=seed)
        simulate_survey(config, root)
    layout = DataLayout(root)
    truth_sources = layout.read_truth_sources()
    skymap = layout.read_skymap()
    objects = layout.read_truth_objects().set_index("objectId")
    subtract, detect = _tasks(overrides)
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
        cached = root / f"template_{visit}.fits"
        if cached.exists():
            template = layout.read_exposure_file(cached)
        else:
            template = (
                GetDcrTemplateTask().make_template(refs, exposure.bbox, exposure.wcs, info).template
            )
            layout.write_exposure_file(template, cached)
        sub = subtract.run(template, exposure)
        dia = detect.run(sub.difference, exposure).diaSources
        src = truth_sources[(truth_sources.visit == visit) & (truth_sources.detector == 0)]
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
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the simulated surveys and their templates here (reused when present; "
        "delete after changing the simulator or the template code)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. subtract.spatialOrder=0 or detect.threshold=5.5",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.cache or Path(tmp)
        for seed in args.seeds:
            root = base / f"seed{seed}_v{args.visits}"
            rows += process(seed, args.visits, root, args.verbose, args.overrides)
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
