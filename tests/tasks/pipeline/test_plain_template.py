"""A survey without DCR coadds or isolated stars: plain templates and PSF stars from detections.

The simulated survey keeps only its exposures and broadband deep coadds (what
a user with their own images has); the pipeline warps the deep coadd onto
each visit and fits the PSF from the image's own isolated detections.  The
truth tables say which transients and variables must be found.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from apdb import Apdb
from tasks.data.layout import DataLayout
from tasks.images import MaskPlane
from tasks.pipeline.plain_template import plain_template
from tasks.pipeline.runner import run_pipeline
from tasks.pipeline.visit import ProcessVisitConfig

SNR_REQUIRED = 10.0
FRACTION_REQUIRED = 0.1


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    from tasks.simulate import SimulationConfig, simulate_survey

    root = tmp_path_factory.mktemp("plain")
    simulate_survey(SimulationConfig.tiny(seed=11, n_visits=4), root)
    shutil.rmtree(root / "coadds" / "dcr")
    shutil.rmtree(root / "isolated_stars")
    layout = DataLayout(root)
    config = ProcessVisitConfig()
    config.packageAlerts.alertWriteLocation = str(layout.output_root / "alerts")
    with Apdb.create(f"sqlite:///{root / 'apdb.sqlite3'}") as apdb:
        summary = run_pipeline(layout, apdb, config, progress=False)
    return layout, summary


def test_every_visit_runs_with_plain_template_and_own_psf_stars(plain_run):
    layout, summary = plain_run
    assert summary.failed == {}
    assert len(summary.processed) == 4
    for visit, detector in summary.processed:
        notes = [n for n in summary.notes if n.startswith(f"visit {visit} det {detector}:")]
        assert any("plain template" in n for n in notes)
        assert any("PSF stars from the image's detections" in n for n in notes)
        assert not any("final PSF fit failed" in n for n in notes), notes


def test_plain_template_is_the_deep_coadd_on_the_science_grid(plain_run):
    layout, _ = plain_run
    visit = layout.visits()[0]
    science = layout.read_exposure(visit, 0)
    template = plain_template(layout, science, visit, 0, border=20)
    assert template.bbox == science.bbox.grown(20)
    inner = template.bbox.slices(science.bbox)
    covered = ~(template.mask[inner] & MaskPlane.NO_DATA).astype(bool)
    assert covered.mean() > 0.99
    # static, unsaturated truth stars: the warped template's flux (17x17 sum) is the truth flux
    truth = layout.read_truth_sources(visit=visit, detector=0)
    stars = truth[(truth["kind"] == "static") & ~truth["saturated"]]
    stars = stars[stars["x"].between(12, 500) & stars["y"].between(12, 500)]
    stars = stars.nlargest(20, "flux")
    ratios = []
    for x, y, flux in zip(stars["x"], stars["y"], stars["flux"], strict=True):
        i, j = round(y), round(x)
        counts = template.image[inner][i - 8 : i + 9, j - 8 : j + 9].sum()
        ratios.append(counts * template.photo_calib.calibration_mean / flux)
    assert abs(np.median(ratios) - 1.0) < 0.02, ratios


def _alert_sources(layout: DataLayout, summary) -> dict[int, pd.DataFrame]:
    from tasks.alerts.io import read_alert_file

    out = {}
    for path in summary.alert_files:
        alerts = read_alert_file(path)
        frame = pd.DataFrame([a["diaSource"] for a in alerts])
        out[int(frame["visit"].iloc[0])] = frame
    return out


def test_bright_transients_and_variables_are_detected(plain_run):
    layout, summary = plain_run
    objects = layout.read_truth_objects().set_index("objectId")
    truth = layout.read_truth_sources()
    truth = truth[truth["kind"].isin(["transient", "variable"]) & ~truth["saturated"]]
    mean = np.array(
        [objects.loc[o, f"flux_{b}"] for o, b in zip(truth["objectId"], truth["band"], strict=True)]
    )
    template_flux = np.where(truth["kind"] == "variable", mean, 0.0)
    truth = truth.assign(diffFlux=truth["flux"].to_numpy() - template_flux, tFlux=template_flux)
    truth = truth[truth["x"].between(15, 496) & truth["y"].between(15, 496)]
    sources = _alert_sources(layout, summary)
    checked = 0
    bad = int(MaskPlane.BAD | MaskPlane.SAT | MaskPlane.CR | MaskPlane.NO_DATA)
    for visit, rows in truth.groupby("visit"):
        found = sources[int(visit)]
        noise = float(np.median(found["psfFluxErr"]))
        mask = layout.read_exposure(int(visit), 0).mask
        for _, row in rows.iterrows():
            if abs(row["diffFlux"]) < max(SNR_REQUIRED * noise, FRACTION_REQUIRED * row["tFlux"]):
                continue
            i, j = round(row["y"]), round(row["x"])
            if (mask[i - 12 : i + 13, j - 12 : j + 13] & bad).any():
                continue
            d = np.hypot(found["x"] - row["x"], found["y"] - row["y"])
            assert d.min() < 2.0, f"visit {visit}: {row['kind']} {row['objectId']} not detected"
            assert np.sign(found["psfFlux"].iloc[int(np.argmin(d))]) == np.sign(row["diffFlux"])
            checked += 1
    assert checked >= 8
