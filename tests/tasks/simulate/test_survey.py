import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from tasks.data.layout import DataLayout
from tasks.images import Box2I, MaskPlane
from tasks.images.wcs_utils import sky_direction_in_pixels
from tasks.simulate import SimulationConfig, render_sources, simulate_survey
from tasks.simulate.refraction import sed_subfilter_fractions
from tasks.simulate.survey import _trailed, source_dcr_components

CONFIG = SimulationConfig.tiny(seed=7, n_visits=4, n_sso=12, detector_size=(600, 500), n_static=600)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    truth = simulate_survey(CONFIG, root)
    return truth, DataLayout(root)


def _truth_model(exposure, src, objects, spread=True):
    """Noiseless image of truth sources as the simulator draws them (trails, DCR spread)."""
    src = src.reset_index(drop=True)
    info = exposure.visit_info
    x, y, flux, rows = _trailed(src, objects, info, exposure.wcs)
    counts = exposure.photo_calib.nanojansky_to_instflux(flux)
    components = None
    if spread:
        slopes = objects.set_index("objectId").loc[src["objectId"], "sedSlope"].to_numpy()
        components = source_dcr_components(CONFIG, info, exposure.wcs, exposure.psf, slopes)
        components = components.select(rows)
    return render_sources(exposure.bbox, exposure.psf, x, y, counts, components=components)


def _fit_position(exposure, data, x, y, half=6):
    """Least-squares PSF fit of position (flux solved linearly) in a box around (x, y)."""
    box = Box2I(
        int(np.floor(x + 0.5)) - half, int(np.floor(y + 0.5)) - half, 2 * half + 1, 2 * half + 1
    )
    sl = exposure.bbox.slices(box)
    d, v = data[sl], exposure.variance[sl].astype(float)
    v = np.where(exposure.mask[sl] == 0, v, np.inf)  # ignore flagged pixels

    def chi2(p):
        m = render_sources(box, exposure.psf, [p[0]], [p[1]], [1.0])
        norm = (m * m / v).sum()
        if norm == 0:
            return np.inf
        f = (m * d / v).sum() / norm
        return (((d - f * m) ** 2) / v).sum()

    res = minimize(chi2, [x, y], method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
    return res.x


def test_layout_is_complete(survey):
    truth, layout = survey
    assert layout.check() == []
    visits = layout.visits()
    assert visits == sorted(truth.visits["visit"].tolist()) and len(visits) == 4
    for visit in visits:
        assert layout.detectors(visit) == [0]
        assert layout.has_ss_predictions(visit)
    table = layout.read_visit_table()
    assert set(table["band"]) == {"g", "r"}
    assert table["airmass"].min() >= 1.0 and table["midpointMjdTai"].is_monotonic_increasing
    exp = layout.read_exposure(visits[0], 0)
    assert exp.visit_info == layout.read_visit_info(visits[0]) or (
        exp.visit_info.visit_id == visits[0]
    )
    assert exp.psf is not None and exp.photo_calib is not None and exp.band == exp.visit_info.band
    # the PSF varies smoothly over the detector
    s = exp.psf.sigma(np.array([0.0, 599.0]), np.array([0.0, 499.0]))
    assert s[0] != pytest.approx(s[1], rel=1e-3)
    assert layout.read_skymap().to_dict() == truth.skymap.to_dict()
    for band in ("g", "r"):
        patches = layout.dcr_patches(band)
        assert patches
        subs = layout.read_dcr_coadds(*patches[0], band)
        assert len(subs) == CONFIG.n_subfilters
        assert subs[0].wcs is not None and subs[0].band == band
    assert layout.read_truth_objects().shape[0] == len(truth.objects)


def test_dcr_subfilter_coadds_sum_to_the_broadband_coadd(survey):
    truth, layout = survey
    tract, patch = layout.dcr_patches("g")[0]
    subs = layout.read_dcr_coadds(tract, patch, "g")
    deep = layout.read_deep_coadd(tract, patch, "g")
    total = sum(s.image.astype(np.float64) for s in subs)
    scale = np.abs(deep.image).max()
    np.testing.assert_allclose(total, deep.image, atol=1e-6 * scale)
    np.testing.assert_allclose(sum(s.variance for s in subs), deep.variance, rtol=1e-6)
    # a star's light is split among the sub-filters as its SED says
    objects = truth.objects
    bright = objects[
        (objects["kind"] == "static") & (objects["mag_r"] < 20.5) & objects["isIsolated"]
    ]
    assert len(bright) >= 3
    x, y = deep.sky_to_pixel(bright["ra"].to_numpy(), bright["dec"].to_numpy())
    inside = deep.bbox.grown(-20).contains(x, y)
    expected = sed_subfilter_fractions("g", 3, bright["sedSlope"].to_numpy()[inside])
    measured = []
    for s in subs:
        f = []
        for xx, yy in zip(x[inside], y[inside], strict=True):
            p = s.psf.compute_image(xx, yy)
            d = s.image[s.bbox.slices(s.psf.stamp_box(xx, yy))]
            f.append((p * d).sum() / (p * p).sum())
        measured.append(f)
    measured = np.array(measured).T
    np.testing.assert_allclose(measured / measured.sum(axis=1, keepdims=True), expected, atol=0.01)


def test_injected_fluxes_and_variance_in_survey_exposures(survey):
    truth, layout = survey
    visit = layout.visits()[1]
    exp = layout.read_exposure(visit, 0)
    src = layout.read_truth_sources(visit, 0)
    objects = truth.objects.set_index("objectId")
    iso = src[
        objects.loc[src["objectId"], "isIsolated"].to_numpy()
        & ~src["saturated"].to_numpy()
        & exp.bbox.grown(-20).contains(src["x"].to_numpy(), src["y"].to_numpy())
    ]
    assert len(iso) >= 10
    pulls = []
    for row in iso.itertuples():
        p = exp.psf.compute_image(row.x, row.y)
        sl = exp.bbox.slices(exp.psf.stamp_box(row.x, row.y))
        good = (exp.mask[sl] & (MaskPlane.BAD | MaskPlane.CR | MaskPlane.SAT)) == 0
        d, v = exp.image[sl].astype(float), exp.variance[sl].astype(float)
        s2 = (p * p * good).sum()
        flux = (p * d * good).sum() / s2
        err = np.sqrt((p * p * v * good).sum()) / s2
        pulls.append((flux - row.instFlux) / err)
    pulls = np.array(pulls)
    assert abs(np.median(pulls)) < 1.0
    assert np.mean(np.abs(pulls) < 3.5) > 0.85
    # the image minus the truth model is noise described by the variance plane
    resid = (exp.image - _truth_model(exp, src, truth.objects)) / np.sqrt(exp.variance)
    inner = exp.bbox.grown(-20)
    clean = (exp.mask == 0)[exp.bbox.slices(inner)]
    resid = resid[exp.bbox.slices(inner)][clean]
    assert np.std(resid) == pytest.approx(1.0, abs=0.02)
    assert abs(np.mean(resid)) < 0.02


def test_dcr_moves_stars_along_the_zenith_direction(survey):
    truth, layout = survey
    table = layout.read_visit_table()
    visit = int(table.sort_values("airmass")["visit"].iloc[-1])  # highest airmass
    exp = layout.read_exposure(visit, 0)
    src = layout.read_truth_sources(visit, 0)
    objects = truth.objects.set_index("objectId")
    sel = (
        objects.loc[src["objectId"], "isIsolated"].to_numpy()
        & ~src["saturated"].to_numpy()
        & (src["instFlux"].to_numpy() > 1e4)
        & exp.bbox.grown(-10).contains(src["x"].to_numpy(), src["y"].to_numpy())
    )
    # the 12 brightest such stars (position errors ~0.01 px)
    sel[np.flatnonzero(sel)[np.argsort(-src["instFlux"].to_numpy()[sel])[12:]]] = False
    others = _truth_model(exp, src[~sel], truth.objects)
    data = exp.image.astype(float) - others
    src = src[sel]
    assert len(src) >= 8
    x0, y0 = exp.sky_to_pixel(src["ra"].to_numpy(), src["dec"].to_numpy())
    ux, uy = sky_direction_in_pixels(exp.wcs, 300, 250, exp.visit_info.parallactic_angle)
    measured = []
    for xx, yy in zip(x0, y0, strict=True):
        fx, fy = _fit_position(exp, data, xx, yy)
        measured.append((fx - xx) * ux + (fy - yy) * uy)
    measured = np.array(measured)
    expected = src["dcrShiftX"].to_numpy() * ux + src["dcrShiftY"].to_numpy() * uy
    # truth: the shift is along the zenith direction
    np.testing.assert_allclose(
        src["dcrShiftX"].to_numpy() * uy - src["dcrShiftY"].to_numpy() * ux, 0, atol=1e-6
    )
    assert np.ptp(expected) > 0.1  # the SEDs differ enough for DCR to show
    assert np.corrcoef(measured, expected)[0, 1] > 0.85
    assert np.median(np.abs(measured - expected)) < 0.03


def test_moving_objects_move_at_their_stated_rates(survey):
    truth, layout = survey
    sso = truth.objects[truth.objects["kind"] == "sso"].set_index("ssObjectId")
    seen = 0
    for visit in layout.visits():
        pred = layout.read_ss_predictions(visit)
        true = truth.sources[(truth.sources["visit"] == visit) & (truth.sources["kind"] == "sso")]
        merged = true.merge(pred, on="ssObjectId", suffixes=("", "_pred"))
        if merged.empty:
            continue
        seen += len(merged)
        dra = (merged["ra_pred"] - merged["ra"]) * np.cos(np.radians(merged["dec"])) * 3600
        ddec = (merged["dec_pred"] - merged["dec"]) * 3600
        # prediction errors are small (0.15" per axis)
        assert np.all(np.hypot(dra, ddec) < 1.0)
        # the true position follows the stated rate from the reference epoch
        o = sso.loc[merged["ssObjectId"]]
        dt = merged["midpointMjdTai"].to_numpy() - o["tRef"].to_numpy()
        cosd = np.cos(np.radians(o["dec"].to_numpy()))
        exp_ra = o["ra"].to_numpy() + o["raRate"].to_numpy() * dt / cosd
        exp_dec = o["dec"].to_numpy() + o["decRate"].to_numpy() * dt
        sep = np.hypot((merged["ra"].to_numpy() - exp_ra) * cosd, merged["dec"] - exp_dec) * 3600
        # linear rates at the reference epoch hold to well under an arcsec over hours
        assert np.all(sep < 0.5 + 0.05 * np.abs(dt) * 24)
    assert seen >= 3
    # an SSO seen in two visits moved by rate * dt
    s = truth.sources[truth.sources["kind"] == "sso"]
    multi = s.groupby("ssObjectId").filter(lambda g: len(g) >= 2)
    for ss_id, g in multi.groupby("ssObjectId"):
        g = g.sort_values("midpointMjdTai")
        dt = g["midpointMjdTai"].iloc[-1] - g["midpointMjdTai"].iloc[0]
        cosd = np.cos(np.radians(g["dec"].iloc[0]))
        moved = np.hypot(
            (g["ra"].iloc[-1] - g["ra"].iloc[0]) * cosd, g["dec"].iloc[-1] - g["dec"].iloc[0]
        )
        assert moved == pytest.approx(sso.loc[ss_id, "rate"] * dt, rel=0.01)


def test_light_curves_and_isolated_stars(survey):
    truth, layout = survey
    src = truth.sources
    var = src[src["kind"] == "variable"].merge(truth.objects, on="objectId", suffixes=("", "_o"))
    assert len(var) > 0
    phase = 2 * np.pi * (var["midpointMjdTai"] - var["tRef"]) / var["period"] + var["phase"]
    mean = np.where(var["band"] == "g", var["flux_g"], var["flux_r"])
    np.testing.assert_allclose(var["flux"], mean * (1 + var["amplitude"] * np.sin(phase)))
    tra = src[src["kind"] == "transient"].merge(truth.objects, on="objectId", suffixes=("", "_o"))
    before = tra["midpointMjdTai"] < tra["tStart"]
    assert np.all(tra.loc[before, "flux"] == 0) and np.all(tra.loc[~before, "flux"] > 0)
    cat = layout.read_isolated_star_cat(0)
    srcs = layout.read_isolated_star_sources(0)
    assert len(cat) == len(truth.isolated_star_ids) > 5
    for row in cat.head(10).itertuples():
        rows = srcs.iloc[row.source_cat_index : row.source_cat_index + row.nsource]
        assert np.all(rows["isolated_star_id"] == row.isolated_star_id)
    assert (cat["nsource_g"] + cat["nsource_r"] == cat["nsource"]).all()


def test_same_seed_same_survey_and_in_memory_mode():
    cfg = SimulationConfig.tiny(seed=3, n_visits=1, detector_size=(200, 200), n_static=40)
    a = simulate_survey(cfg)
    b = simulate_survey(cfg)
    (key,) = a.exposures
    np.testing.assert_array_equal(a.exposures[key].image, b.exposures[key].image)
    np.testing.assert_array_equal(a.exposures[key].mask, b.exposures[key].mask)
    pd.testing.assert_frame_equal(a.sources, b.sources)
    c = simulate_survey(cfg.model_copy(update={"seed": 4}))
    assert not np.array_equal(a.exposures[key].image, c.exposures[key].image)


def test_moving_objects_are_trailed_over_the_exposure(survey):
    from tasks.simulate.geometry import detector_wcs

    truth, layout = survey
    src = truth.sources[truth.sources["kind"] == "sso"]
    visit = int(src["visit"].iloc[0])
    rows = src[src["visit"] == visit].reset_index(drop=True)
    info = layout.read_visit_info(visit)
    x, y, flux, index = _trailed(rows, truth.objects, info, detector_wcs(CONFIG, info, 0))
    n = len(rows)
    tx, ty, tf = x[-9 * n :].reshape(n, 9), y[-9 * n :].reshape(n, 9), flux[-9 * n :].reshape(n, 9)
    np.testing.assert_allclose(tf.sum(axis=1), rows["flux"])
    # each trail point belongs to its object (and is drawn with its DCR components)
    np.testing.assert_array_equal(
        index[-9 * n :].reshape(n, 9), np.repeat(np.arange(n)[:, None], 9, 1)
    )
    # the trail is centred on the truth position and as long as rate * exposure time
    np.testing.assert_allclose(tx[:, 4], rows["x"], atol=1e-3)
    np.testing.assert_allclose(ty[:, 4], rows["y"], atol=1e-3)
    rate = truth.objects.set_index("objectId").loc[rows["objectId"], "rate"].to_numpy()
    length = np.hypot(tx[:, -1] - tx[:, 0], ty[:, -1] - ty[:, 0]) * CONFIG.pixel_scale
    np.testing.assert_allclose(length, rate * 3600 * info.exposure_time / 86400, rtol=1e-3)


def test_an_empty_sky_still_writes_a_valid_layout(tmp_path):
    cfg = SimulationConfig.tiny(
        detector_size=(96, 80), n_visits=2, n_static=0, n_variable=0, n_transient=0, n_sso=0
    )
    truth = simulate_survey(cfg, tmp_path)
    layout = DataLayout(tmp_path)
    assert truth.sources.empty and layout.read_isolated_star_cat(0).empty
    assert layout.read_ss_predictions(layout.visits()[0]).empty
    exp = layout.read_exposure(layout.visits()[0], 0)
    clean = exp.mask == 0
    # only sky noise: the variance plane describes it
    assert np.std(exp.image[clean] / np.sqrt(exp.variance[clean])) == pytest.approx(1.0, abs=0.05)


def test_bright_stars_saturate_and_are_flagged(survey):
    truth, layout = survey
    visit = layout.visits()[0]
    exp = layout.read_exposure(visit, 0)
    src = layout.read_truth_sources(visit, 0)
    sat = src[src["saturated"]]
    assert len(sat) >= 1
    for row in sat.itertuples():
        i, j = int(np.floor(row.y + 0.5)), int(np.floor(row.x + 0.5))
        assert exp.mask[i, j] & MaskPlane.SAT
        assert exp.image[i, j] == pytest.approx(CONFIG.saturation)
    # unsaturated stars have no SAT pixel at their centre
    ok = src[~src["saturated"]]
    rows = np.floor(ok["y"].to_numpy() + 0.5).astype(int)
    cols = np.floor(ok["x"].to_numpy() + 0.5).astype(int)
    assert not np.any(exp.mask[rows, cols] & MaskPlane.SAT.value)


def test_exposures_hold_dcr_spread_stars(survey):
    """At airmass 1.3 in g each star's light lies along the zenith as its SED refracts it."""
    truth, layout = survey
    table = layout.read_visit_table()
    g = table[table["band"] == "g"].sort_values("airmass")
    visit = int(g["visit"].iloc[-1])
    assert g["airmass"].iloc[-1] > 1.3
    exp = layout.read_exposure(visit, 0)
    src = layout.read_truth_sources(visit, 0)
    chi = {}
    for spread in (True, False):
        chi[spread] = (exp.image - _truth_model(exp, src, truth.objects, spread)) / np.sqrt(
            exp.variance
        )
    inner = exp.bbox.slices(exp.bbox.grown(-20))
    clean = (exp.mask == 0)[inner]
    assert np.std(chi[True][inner][clean]) == pytest.approx(1.0, abs=0.02)
    # stamps of bright unsaturated stars: noise with the spread model, not without it
    bright = src[
        ~src["saturated"].to_numpy()
        & (src["instFlux"].to_numpy() > 3e4)
        & exp.bbox.grown(-10).contains(src["x"].to_numpy(), src["y"].to_numpy())
    ]
    assert len(bright) >= 5
    per_pixel = {True: [], False: []}
    for row in bright.itertuples():
        sl = exp.bbox.slices(Box2I(int(round(row.x)) - 5, int(round(row.y)) - 5, 11, 11))
        for spread in (True, False):
            good = exp.mask[sl] == 0
            per_pixel[spread].append(np.mean(chi[spread][sl][good] ** 2))
    with_spread, without = np.median(per_pixel[True]), np.median(per_pixel[False])
    print(f"bright-star chi2/pixel: {with_spread:.2f} with the DCR spread, {without:.2f} without")
    assert with_spread < 1.3
    assert without > 2.0 * with_spread
