"""Template, difference and detection on the simulator's survey (tiny preset).

The science exposures have the simulator's spatially varying PSF, noise,
defects, DCR shifts computed with pyerfa and per-source spectral slopes; the
templates come from its DCR sub-filter coadds through `GetDcrTemplateTask`.
"""

import functools

import numpy as np
import pytest

from tasks.dcr import CoaddRef, GetDcrTemplateTask
from tasks.diffim import DetectAndMeasureTask, SubtractImagesTask
from tasks.simulate.config import SimulationConfig
from tasks.simulate.survey import simulate_survey


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    truth = simulate_survey(SimulationConfig.tiny(n_visits=2, bands=["g", "r"]), root)
    layout = truth.layout
    skymap = layout.read_skymap()
    out = []
    for visit in layout.visits():
        exposure = layout.read_exposure(visit, 0)
        band = exposure.visit_info.band
        refs = []
        for tract, patch in layout.dcr_patches(band):
            info = skymap[tract].patch_info(patch)
            for k in layout.dcr_subfilters(tract, patch, band):
                path = layout.dcr_coadd_path(tract, patch, band, k)
                data_id = {"tract": tract, "patch": patch, "subfilter": k}
                loader = functools.partial(layout.read_exposure_file, path)
                refs.append(CoaddRef(data_id, info.outer_bbox, info.wcs, loader))
        template = (
            GetDcrTemplateTask()
            .make_template(refs, exposure.bbox, exposure.wcs, exposure.visit_info)
            .template
        )
        sub = SubtractImagesTask().run(template, exposure)
        det = DetectAndMeasureTask().run(sub.difference, exposure)
        sources = truth.sources[(truth.sources.visit == visit) & (truth.sources.detector == 0)]
        objects = truth.objects.set_index("objectId").loc[sources["objectId"]]
        in_template = objects["kind"].isin(["static", "variable"]).to_numpy()
        template_flux = np.where(in_template, objects[f"flux_{band}"].to_numpy(), 0.0)
        change = sources["flux"].to_numpy() - template_flux
        out.append((exposure, sub, det.diaSources, sources, change))
    return out


def test_static_stars_subtract_to_the_noise(processed):
    for exposure, sub, _, sources, _ in processed:
        assert sub.kernelMode == "fit"
        chi = sub.difference.image / np.sqrt(sub.difference.variance)
        values = []
        static = sources[sources["kind"] == "static"]
        for x, y in zip(static["x"], static["y"], strict=True):
            cx, cy = int(round(x)), int(round(y))
            if 8 <= cx < exposure.width - 8 and 8 <= cy < exposure.height - 8:
                stamp = chi[cy - 4 : cy + 5, cx - 4 : cx + 5]
                if np.isfinite(stamp).all():
                    values.append(np.mean(stamp**2))
        median = float(np.median(values))
        print(f"visit {exposure.visit_info.visit_id}: chi2/pixel median {median:.3f}")
        assert 0.85 < median < 1.2


def test_changing_sources_are_detected(processed):
    for exposure, sub, dia, sources, change in processed:
        calib = exposure.photo_calib.calibration_mean
        # expected S/N of the change from the PSF and the difference variance
        psf = exposure.psf
        snr = np.full(len(sources), np.nan)
        xs, ys = sources["x"].to_numpy(), sources["y"].to_numpy()
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            box = psf.stamp_box(x, y)
            if not exposure.bbox.contains_box(box):
                continue
            p = psf.compute_image(x, y)
            var = sub.difference.variance[exposure.bbox.slices(box)]
            snr[i] = change[i] / calib / (np.sqrt(np.sum(p * p * var)) / np.sum(p * p))
        strong = np.abs(snr) > 8.0
        d = np.hypot(
            dia["x"].to_numpy()[:, None] - xs[None, :], dia["y"].to_numpy()[:, None] - ys[None, :]
        )
        found = d.min(axis=0) < 2.5
        kinds = sources["kind"].to_numpy()
        print(
            f"visit {exposure.visit_info.visit_id} ({exposure.visit_info.band}, airmass "
            f"{exposure.visit_info.airmass:.2f}): {strong.sum()} changes above 8 sigma "
            f"({dict(zip(*np.unique(kinds[strong], return_counts=True), strict=True))}), "
            f"{found[strong].sum()} detected; {len(dia)} DiaSources"
        )
        assert strong.sum() >= 3
        assert found[strong].all()
        # detections far from every changing source: residuals of static stars,
        # mostly around saturated stars, where they carry pixel flags
        changing = np.abs(change) > 0
        spurious = d[:, changing].min(axis=1) > 3.0
        flags = ["pixelFlags_saturated", "pixelFlags_suspect", "pixelFlags_bad", "pixelFlags_cr"]
        flagged = dia[flags].to_numpy(bool).any(axis=1)
        print(
            f"   detections not near a changing source: {spurious.sum()}, "
            f"of which without pixel flags: {(spurious & ~flagged).sum()}"
        )
        assert (spurious & ~flagged).sum() <= 10
