"""Template, difference and detection on the simulator's survey (tiny preset).

The science exposures have the simulator's spatially varying PSF, noise,
defects, DCR shifts computed with pyerfa and per-source spectral slopes; the
templates come from its DCR sub-filter coadds through `GetDcrTemplateTask`.
"""

import numpy as np
import pytest

from tasks.dcr import GetDcrTemplateTask
from tasks.dcr.get_template import layout_coadd_refs
from tasks.diffim import DetectAndMeasureTask, SubtractImagesTask
from tasks.diffim.evaluate import score_detections
from tasks.simulate.config import SimulationConfig
from tasks.simulate.survey import simulate_survey


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    truth = simulate_survey(SimulationConfig.tiny(n_visits=2, bands=["g", "r"]), root)
    layout = truth.layout
    out = []
    for visit in layout.visits():
        exposure = layout.read_exposure(visit, 0)
        band = exposure.visit_info.band
        refs = layout_coadd_refs(layout, band)
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
    """Completeness of the simulated changes and the spurious detections per detector.

    Measured with `tasks.diffim.evaluate` (seed 42, 2 visits at airmass 1.44
    (g) and 1.47 (r)): every change above 5 sigma is found; 20 and 23
    DiaSources lie away from every changing source (residuals around the
    saturated and near-saturated stars), 7 of each without a pixel flag.
    The detection of the previous version gave 12 (2) and 26 (9) on these
    visits; over 16 visits of 4 seeds (bench/diffim/score_simulated.py) the
    mean went from 19.2 (4.6 unflagged) to 9.3 (2.6) per detector.
    """
    for exposure, sub, dia, sources, change in processed:
        band = exposure.visit_info.band
        template_flux = sources["flux"].to_numpy() - change
        score = score_detections(dia, sub.difference, sources, template_flux)
        snr = np.abs(np.nan_to_num(score.snr))
        kinds = score.kind
        print(
            f"visit {exposure.visit_info.visit_id} ({band}, airmass "
            f"{exposure.visit_info.airmass:.2f}): {(snr >= 5).sum()} changes above 5 sigma "
            f"({dict(zip(*np.unique(kinds[snr >= 5], return_counts=True), strict=True))}), "
            f"{score.found[snr >= 5].sum()} detected; {len(dia)} DiaSources, "
            f"{score.n_spurious} spurious ({score.n_spurious_unflagged} without pixel flags)"
        )
        assert (snr >= 8).sum() >= 3
        assert len(score.missed(8.0)) == 0
        assert len(score.missed(5.0)) <= 1
        # residuals of static stars: mostly around saturated stars, flagged
        assert score.n_spurious <= 25
        assert score.n_spurious_unflagged <= 8
