"""Final characterization on a detector from the survey simulator (tasks.simulate).

The ``src`` table stands in for the detection step: the simulator's true
positions with a measured aperture flux.  The exposure carries the
simulator's own PSF, which is the truth the fitted model is compared with.
"""

import numpy as np
import pandas as pd
import pytest

from tasks.characterize import FinalizeCharacterizationTask
from tasks.characterize.aperture import aperture_flux
from tasks.characterize.psf_model import adaptive_moments
from tasks.simulate import SimulationConfig, simulate_survey


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    cfg = SimulationConfig.tiny(
        seed=11, n_visits=1, detector_size=(800, 800), n_static=900, n_variable=0,
        n_transient=0, n_sso=0,
    )  # fmt: skip
    truth = simulate_survey(cfg, tmp_path_factory.mktemp("sim"))
    layout = truth.layout
    visit = layout.visits()[0]
    detector = layout.detectors(visit)[0]
    exposure = layout.read_exposure(visit, detector)
    sources = truth.sources
    sources = sources[(sources["visit"] == visit) & (sources["detector"] == detector)]
    x, y = sources["x"].to_numpy(), sources["y"].to_numpy()
    origin = (exposure.bbox.x0, exposure.bbox.y0)
    ap = aperture_flux(exposure.image, exposure.variance, exposure.mask, origin, x, y, 6.0)
    src = pd.DataFrame(
        {"x": x, "y": y, "psfFlux": ap.flux, "psfFluxErr": ap.flux_err,
         "snr": ap.flux / ap.flux_err}
    )  # fmt: skip
    tracts = layout.isolated_star_tracts()
    cats = {t: layout.read_isolated_star_cat(t) for t in tracts}
    srcs = {t: layout.read_isolated_star_sources(t) for t in tracts}
    return visit, detector, exposure, src, cats, srcs, layout


def test_fit_matches_the_simulated_psf(simulated):
    visit, detector, exposure, src, cats, srcs, _ = simulated
    task = FinalizeCharacterizationTask()
    res = task.run(visit, exposure.band, cats, srcs, {detector: src}, {detector: exposure})
    row = res.psf_ap_corr_cat.iloc[0]
    assert row["psf_ok"], row["reason"]
    assert row["n_used"] >= 8 and row["n_reserved"] >= 1
    psf = res.psfs[detector]
    g = np.linspace(50.0, 750.0, 5)
    xs, ys = (v.ravel() for v in np.meshgrid(g, g))
    kernels = np.stack(
        [exposure.psf.compute_kernel_image(a, b) for a, b in zip(xs, ys, strict=True)]
    )
    true_w = np.sqrt(adaptive_moments(kernels)[:, :2].mean(axis=1) - 1 / 12)
    # about ten faint stars: cross-validation keeps a low spatial order, so the
    # width is right on average over the detector and within 10 % everywhere
    ratio = np.asarray(psf.sigma(xs, ys)) / true_w
    assert abs(np.mean(ratio) - 1) < 0.03 and np.max(np.abs(ratio - 1)) < 0.1
    # the model describes the stars it was fitted to down to the noise
    chi2 = res.output_table.loc[res.output_table["calib_psf_used"], "calib_psf_chi2"]
    assert 0.7 < np.median(chi2) < 1.3
    # the aperture correction absorbs what the model misses (light beyond the grid, the
    # width variation a constant model leaves out): corrected PSF fluxes of the stars
    # match their 12-px aperture fluxes
    out = res.output_table
    used = out["apcorr_used"].to_numpy()
    ratio = out["apFlux_instFlux"] / (out["base_PsfFlux_instFlux"] * out["base_PsfFlux_apCorr"])
    assert abs(np.median(ratio[used]) - 1) < 0.01


def test_run_quantum_reads_and_writes_the_data_layout(simulated):
    from tasks.characterize.persist import read_final_psf_and_ap_corr_map

    visit, detector, _, src, _, _, layout = simulated
    missing = detector + 1  # no exposure on disk: a failed row, not a crash
    res = FinalizeCharacterizationTask().runQuantum(layout, visit, {detector: src, missing: src})
    cat = res.psf_ap_corr_cat.set_index("detector")
    assert cat.loc[detector, "psf_ok"] and not cat.loc[missing, "psf_ok"]
    psf, amap = read_final_psf_and_ap_corr_map(layout, visit, detector)
    xs, ys = np.array([10.0, 400.0]), np.array([20.0, 700.0])
    assert np.array_equal(psf.compute_images(xs, ys), res.psfs[detector].compute_images(xs, ys))
    assert np.array_equal(amap.evaluate(xs, ys), res.ap_corr_maps[detector].evaluate(xs, ys))
