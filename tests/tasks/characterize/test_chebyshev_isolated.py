import numpy as np
import pandas as pd
import pytest

from tasks.characterize.apcorr import PSF_FLUX_FIELD, ApCorrMap
from tasks.characterize.aperture import aperture_flux
from tasks.characterize.chebyshev import ChebyshevBoundedField, term_orders
from tasks.characterize.isolated import reserve_mask, select_and_concat
from tasks.core.base import TaskError
from tasks.images import object_from_hdu, object_to_hdu

BOX = (-0.5, -0.5, 2047.5, 4095.5)


def test_field_fit_with_clipping_recovers_truth():
    rng = np.random.default_rng(1)
    truth = ChebyshevBoundedField(BOX, 2, [1.03, 0.01, -0.008, 0.004, 0.002, -0.003])
    x, y = rng.uniform(0, 2047, 300), rng.uniform(0, 4095, 300)
    values = truth.evaluate(x, y) + rng.normal(0, 0.003, x.size)
    values[:15] += 0.2  # outliers (blends, cosmic rays)
    fit, used = ChebyshevBoundedField.fit(x, y, values, BOX, 2, np.full(x.size, 0.003))
    assert not used[:15].any() and used[15:].mean() > 0.97
    gx, gy = np.meshgrid(np.linspace(0, 2047, 9), np.linspace(0, 4095, 9))
    assert np.max(np.abs(fit.evaluate(gx, gy) / truth.evaluate(gx, gy) - 1)) < 0.002
    assert fit.evaluate(gx, gy).shape == gx.shape
    with pytest.raises(TaskError):
        ChebyshevBoundedField.fit(x[:3], y[:3], values[:3], BOX, 2)
    assert len(term_orders(2)) == 6


def test_apcorr_map_round_trip():
    f = ChebyshevBoundedField(BOX, 1, [1.1, 0.01, 0.02])
    amap = ApCorrMap({PSF_FLUX_FIELD: f, "other": ChebyshevBoundedField(BOX, 0, [2.0])})
    back = object_from_hdu(object_to_hdu(amap, "APCORR"))
    assert set(back) == {PSF_FLUX_FIELD, "other"}
    assert np.array_equal(
        back.evaluate([3.0, 7.0], [1.0, 9.0]), amap.evaluate([3.0, 7.0], [1.0, 9.0])
    )
    assert back["other"].evaluate(5.0, 5.0) == 2.0
    with pytest.raises(TaskError):
        ApCorrMap({"other": f})


def test_aperture_flux_of_uniform_image_is_area():
    image = np.ones((100, 100))
    res = aperture_flux(
        image, image, None, (0, 0), np.array([50.3, 1.0]), np.array([40.7, 50.0]), 10.0
    )
    assert res.flux[0] == pytest.approx(np.pi * 100, rel=2e-3)
    assert res.flag_edge[1] and np.isnan(res.flux[1])


def test_reserve_is_deterministic_per_band_and_tract():
    a = reserve_mask(1000, 0.1, "r", 9813)
    assert a.sum() == 100
    assert np.array_equal(a, reserve_mask(1000, 0.1, "r", 9813))
    assert not np.array_equal(a, reserve_mask(1000, 0.1, "g", 9813))
    assert not np.array_equal(a, reserve_mask(1000, 0.1, "r", 9814))


def test_select_and_concat_reindexes_and_inherits_reserve():
    stars = {
        1: pd.DataFrame({"isolated_star_id": [10, 11, 12], "ra": [1.0, 2, 3], "dec": [0.0, 0, 0]}),
        2: pd.DataFrame({"isolated_star_id": [20, 21], "ra": [4.0, 5], "dec": [0.0, 0]}),
    }
    sources = {
        1: pd.DataFrame(
            {"obj_index": [0, 1, 2, 2], "band": ["r", "g", "r", "r"], "visit": [1, 1, 1, 2]}
        ),
        2: pd.DataFrame({"obj_index": [1, 0], "band": ["r", "r"], "visit": [1, 1]}),
    }
    cat, src = select_and_concat("r", stars, sources, reserve_fraction=0.5)
    assert list(cat["isolated_star_id"]) == [10, 12, 20, 21]  # 11 is only seen in g
    assert (src["band"] == "r").all() and len(src) == 5
    # every source points at its own star
    ids = {1: [10, 11, 12], 2: [20, 21]}
    for t, o, new in zip(src["tract"], sources_obj(sources), src["obj_index"], strict=True):
        assert cat["isolated_star_id"].iloc[new] == ids[t][o]
    assert np.array_equal(src["reserved"].to_numpy(), cat["reserved"].to_numpy()[src["obj_index"]])
    # the same reserve in another "visit" (a subset of sources does not change it)
    cat2, _ = select_and_concat("r", stars, {1: sources[1].iloc[[0, 2]], 2: sources[2]}, 0.5)
    assert np.array_equal(cat2["reserved"].to_numpy(), cat["reserved"].to_numpy())
    with pytest.raises(TaskError):
        select_and_concat("r", stars, {1: sources[1]})


def sources_obj(sources):
    out = []
    for t in (1, 2):
        s = sources[t]
        out += list(s.loc[s["band"] == "r", "obj_index"])
    return out


def test_best_order_prefers_a_constant_for_few_noisy_points():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 2047, 20), rng.uniform(0, 4095, 20)
    values = 1.0 + rng.normal(0, 0.05, x.size)
    field, _ = ChebyshevBoundedField.fit_best_order(x, y, values, BOX, 2, np.full(x.size, 0.05))
    assert field.order == 0 and abs(field.coefficients[0] - 1) < 0.03
    # a strong gradient measured precisely is kept
    values = 1.0 + 0.05 * (x / 2047) + rng.normal(0, 0.002, x.size)
    field, _ = ChebyshevBoundedField.fit_best_order(x, y, values, BOX, 2, np.full(x.size, 0.002))
    assert field.order >= 1
