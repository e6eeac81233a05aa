"""Tests of AssociationTask: the one-to-one matching against known truth."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from tasks.association import AssociationConfig, AssociationError, AssociationTask

ARCSEC = 1.0 / 3600.0


def _objects(ra, dec, err_arcsec=None):
    table = pd.DataFrame(
        {"diaObjectId": np.arange(1, len(ra) + 1, dtype=np.int64) * 10, "ra": ra, "dec": dec}
    )
    if err_arcsec is not None:
        table["raErr"] = np.asarray(err_arcsec) * ARCSEC / np.cos(np.radians(dec))
        table["decErr"] = np.asarray(err_arcsec) * ARCSEC
    return table


def _sources(ra, dec, err_arcsec=None):
    table = pd.DataFrame(
        {"diaSourceId": np.arange(1, len(ra) + 1, dtype=np.int64) * 7 + 1000, "ra": ra, "dec": dec}
    )
    if err_arcsec is not None:
        table["raErr"] = np.asarray(err_arcsec) * ARCSEC / np.cos(np.radians(dec))
        table["decErr"] = np.asarray(err_arcsec) * ARCSEC
    return table


def _greedy(objects, sources, radius_arcsec):
    """Reference greedy nearest-pair matcher, to show where it fails."""
    pairs = []
    for i, (ra, dec) in enumerate(zip(sources.ra, sources.dec, strict=True)):
        d = np.hypot((objects.ra - ra) * np.cos(np.radians(dec)), objects.dec - dec) * 3600
        for j in np.flatnonzero(d < radius_arcsec):
            pairs.append((d.iloc[j], i, j))
    used_s, used_o, result = set(), set(), {}
    for _, i, j in sorted(pairs):
        if i not in used_s and j not in used_o:
            used_s.add(i)
            used_o.add(j)
            result[i] = j
    return result


@pytest.mark.parametrize("with_errors", [False, True])
def test_close_pair_one_to_one_beats_greedy(with_errors):
    # Two objects 0.6" apart along ra; the source of object 1 scattered
    # towards object 2, the source of object 2 scattered away from it.
    dec0 = 10.0
    cosd = np.cos(np.radians(dec0))
    obj = _objects(
        np.array([150.0, 150.0 + 0.6 * ARCSEC / cosd]),
        np.array([dec0, dec0]),
        [0.1, 0.1] if with_errors else None,
    )
    src = _sources(
        np.array([150.0 + 0.32 * ARCSEC / cosd, 150.0 + 0.9 * ARCSEC / cosd]),
        np.array([dec0, dec0]),
        [0.1, 0.1] if with_errors else None,
    )
    greedy = _greedy(obj, src, 1.0)
    assert greedy == {0: 1, 1: 0}  # greedy gets both wrong

    result = AssociationTask().run(src, obj)
    matched = result.matchedDiaSources
    got = dict(zip(matched.diaSourceId, matched.diaObjectId, strict=True))
    assert got == {src.diaSourceId[0]: obj.diaObjectId[0], src.diaSourceId[1]: obj.diaObjectId[1]}
    assert result.nUpdatedDiaObjects == 2
    assert len(result.unAssocDiaSources) == 0
    np.testing.assert_allclose(np.sort(result.matches.distance), [0.3, 0.32], atol=1e-6)


def test_positional_errors_change_the_choice():
    # Object A is farther but has a large error; object B is nearer but
    # very precise: the likelihood prefers A, plain distance prefers B.
    obj = _objects(np.array([20.0 + 0.4 * ARCSEC, 20.0 - 0.3 * ARCSEC]), np.zeros(2), [0.5, 0.01])
    src = _sources(np.array([20.0]), np.array([0.0]), [0.05])
    nll = AssociationTask().run(src, obj).matchedDiaSources.diaObjectId.tolist()
    dist_task = AssociationTask(config=AssociationConfig(score_method="distance"))
    dist = dist_task.run(src, obj).matchedDiaSources.diaObjectId.tolist()
    assert nll == [obj.diaObjectId[0]]
    assert dist == [obj.diaObjectId[1]]


def test_source_beyond_radius_is_unassociated_and_one_to_one():
    obj = _objects(np.array([30.0]), np.array([-5.0]))
    src = _sources(np.array([30.0, 30.0 + 0.2 * ARCSEC, 30.0 + 1.5 * ARCSEC]), np.array([-5.0] * 3))
    result = AssociationTask().run(src, obj)
    assert result.matchedDiaSources.diaSourceId.tolist() == [src.diaSourceId[0]]
    assert sorted(result.unAssocDiaSources.diaSourceId) == sorted(src.diaSourceId[1:])
    assert result.unAssocDiaSources.diaObjectId.isna().all()
    assert result.nUnassociatedDiaObjects == 0


def test_wraps_around_ra_zero():
    obj = _objects(np.array([359.99999]), np.array([0.0]))
    # 0.036" west of ra=0 and 0.464" east of it: 0.5" apart across the wrap
    src = _sources(np.array([0.464 * ARCSEC]), np.array([0.0]))
    result = AssociationTask().run(src, obj)
    assert result.nUpdatedDiaObjects == 1
    assert result.matches.distance.iloc[0] == pytest.approx(0.5, abs=1e-3)


def test_nan_positions_dropped_with_warning(caplog):
    obj = _objects(np.array([10.0, np.nan]), np.array([1.0, 1.0]))
    src = _sources(np.array([10.0, np.nan, 10.0]), np.array([1.0, 1.0, np.inf]))
    with caplog.at_level(logging.WARNING):
        result = AssociationTask().run(src, obj)
    assert "dropping 2 DiaSources" in caplog.text
    assert "dropping 1 DiaObjects" in caplog.text
    assert len(result.droppedDiaSources) == 2
    assert result.matchedDiaSources.diaSourceId.tolist() == [src.diaSourceId[0]]


def test_bad_inputs_raise_clear_errors():
    obj = _objects(np.array([10.0]), np.array([1.0]))
    task = AssociationTask()
    with pytest.raises(AssociationError, match="required columns"):
        task.run(pd.DataFrame({"diaSourceId": [1], "ra": [10.0]}), obj)
    dup = _sources(np.array([10.0, 10.1]), np.array([1.0, 1.0]))
    dup["diaSourceId"] = 5
    with pytest.raises(AssociationError, match="duplicate diaSourceId"):
        task.run(dup, obj)
    bad_type = _sources(np.array([10.0]), np.array([1.0]))
    bad_type["ra"] = ["ten; DROP TABLE DiaObject"]
    with pytest.raises(AssociationError, match="not numeric"):
        task.run(bad_type, obj)


def test_empty_inputs():
    task = AssociationTask()
    src = _sources(np.array([10.0]), np.array([1.0]))
    result = task.run(src, _objects(np.array([]), np.array([])))
    assert len(result.unAssocDiaSources) == 1 and result.nUpdatedDiaObjects == 0
    result = task.run(_sources(np.array([]), np.array([])), _objects([10.0], [1.0]))
    assert result.nUnassociatedDiaObjects == 1 and len(result.matchedDiaSources) == 0


@pytest.mark.parametrize("with_errors", [False, True])
def test_crowded_field_completeness_and_purity(with_errors):
    # 20,000 objects in a 0.25 deg^2 patch (~80 per arcmin^2, a crowded
    # field), 0.1" positional noise, 90 % detected plus 500 new transients.
    rng = np.random.default_rng(42)
    n = 20_000
    ra0, dec0 = 45.0, -30.0
    side = 0.5
    obj_ra = ra0 + rng.uniform(0, side, n) / np.cos(np.radians(dec0))
    obj_dec = dec0 + rng.uniform(0, side, n)
    errors = np.full(n, 0.02) if with_errors else None
    obj = _objects(obj_ra, obj_dec, errors)
    seen = np.flatnonzero(rng.random(n) < 0.9)
    noise = 0.1 * ARCSEC
    src_ra = obj_ra[seen] + rng.normal(0, noise, len(seen)) / np.cos(np.radians(obj_dec[seen]))
    src_dec = obj_dec[seen] + rng.normal(0, noise, len(seen))
    new_ra = ra0 + rng.uniform(0, side, 500) / np.cos(np.radians(dec0))
    new_dec = dec0 + rng.uniform(0, side, 500)
    src = _sources(
        np.concatenate((src_ra, new_ra)),
        np.concatenate((src_dec, new_dec)),
        np.full(len(seen) + 500, 0.1) if with_errors else None,
    )
    truth = np.concatenate((obj.diaObjectId.to_numpy()[seen], np.full(500, -1)))
    result = AssociationTask().run(src, obj)
    got = pd.Series(-1, index=src.diaSourceId)
    got[result.matchedDiaSources.diaSourceId.to_numpy()] = (
        result.matchedDiaSources.diaObjectId.to_numpy(dtype=np.int64)
    )
    got = got.to_numpy()
    real = truth > 0
    completeness = np.mean(got[real] == truth[real])
    purity = np.mean(got[got > 0] == truth[got > 0])
    print(f"completeness {completeness:.5f} purity {purity:.5f}")
    assert completeness >= 0.995, completeness
    assert purity >= 0.995, purity
    # one-to-one
    assert not result.matchedDiaSources.diaObjectId.duplicated().any()


def test_crowded_cluster_uses_every_candidate():
    # 7 objects within 0.9" of each other (more than the k-d tree's first k
    # neighbours) each with its own source 0.05" away: all must match exactly.
    angles = np.linspace(0, 2 * np.pi, 7, endpoint=False)
    dec0 = -60.0
    cosd = np.cos(np.radians(dec0))
    r = 0.4 * ARCSEC
    obj = _objects(200.0 + r * np.cos(angles) / cosd, dec0 + r * np.sin(angles))
    src = _sources(
        200.0 + (r + 0.05 * ARCSEC) * np.cos(angles) / cosd,
        dec0 + (r + 0.05 * ARCSEC) * np.sin(angles),
    )
    result = AssociationTask().run(src, obj)
    matched = result.matchedDiaSources
    assert len(matched) == 7
    assert (matched.diaObjectId.to_numpy() == obj.diaObjectId.to_numpy()).all()
    pairs = AssociationTask().find_candidates(obj, src)
    assert len(pairs.src) == 49  # every source sees every object of the cluster


def test_candidates_equal_brute_force_search():
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    rng = np.random.default_rng(9)
    # very dense: ~3 objects per square arcsec, so many sources have > 4 candidates
    obj = _objects(10 + rng.uniform(0, 20, 1200) * ARCSEC, 5 + rng.uniform(0, 20, 1200) * ARCSEC)
    src = _sources(10 + rng.uniform(0, 20, 300) * ARCSEC, 5 + rng.uniform(0, 20, 300) * ARCSEC)
    # without errors every pair has the default errors' radius, here capped at 1"
    task = AssociationTask(config=AssociationConfig(maxDistArcSeconds=1.0))
    pairs = task.find_candidates(obj, src)
    s_c = SkyCoord(src.ra.to_numpy() * u.deg, src.dec.to_numpy() * u.deg)
    o_c = SkyCoord(obj.ra.to_numpy() * u.deg, obj.dec.to_numpy() * u.deg)
    i_s, i_o, sep, _ = search_around_sky(s_c, o_c, 1.0 * u.arcsec)
    assert set(zip(pairs.src.tolist(), pairs.obj.tolist(), strict=True)) == set(
        zip(i_s.tolist(), i_o.tolist(), strict=True)
    )
    assert np.bincount(pairs.src).max() > 4
    order = np.lexsort((pairs.obj, pairs.src))
    ref = np.lexsort((i_o, i_s))
    np.testing.assert_allclose(pairs.dist[order], sep.arcsec[ref], atol=1e-6)


def test_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(21)
    n = 3000
    obj = _objects(
        80 + rng.uniform(0, 60, n) * ARCSEC, 10 + rng.uniform(0, 60, n) * ARCSEC, np.full(n, 0.05)
    )
    pick = rng.choice(n, 2000, replace=False)
    src = _sources(
        obj.ra.to_numpy()[pick] + rng.normal(0, 0.1, 2000) * ARCSEC,
        obj.dec.to_numpy()[pick] + rng.normal(0, 0.1, 2000) * ARCSEC,
        np.full(2000, 0.1),
    )
    first = AssociationTask().run(src, obj).matches.set_index("diaSourceId")["diaObjectId"]
    again = (
        AssociationTask()
        .run(src.sample(frac=1, random_state=1), obj.sample(frac=1, random_state=2))
        .matches.set_index("diaSourceId")["diaObjectId"]
    )
    pd.testing.assert_series_equal(first.sort_index(), again.sort_index())


@pytest.mark.parametrize(
    ("src_err", "obj_err", "offset", "expected"),
    [
        (0.3, 0.3, 1.9, True),  # young object at 0.3": 5 sigma = 2.1", capped at 2.0"
        (0.3, 0.3, 2.05, False),  # beyond the cap
        (0.3, 0.09, 1.5, True),  # mature object: 5 x 0.313" = 1.57"
        (0.3, 0.09, 1.65, False),
        (0.1, 0.03, 0.6, False),  # precise pair: 5 x 0.104" = 0.52"
        (0.1, 0.03, 0.5, True),
        (0.02, 0.02, 0.45, True),  # tiny errors: the 0.5" floor
        (0.02, 0.02, 0.55, False),
    ],
)
def test_candidate_radius_follows_the_positional_errors(src_err, obj_err, offset, expected):
    dec0 = 40.0
    cosd = np.cos(np.radians(dec0))
    obj = _objects(np.array([100.0]), np.array([dec0]), [obj_err])
    # along a diagonal, so both axes and the tangent-plane offsets are used
    src = _sources(
        np.array([100.0 + offset / np.sqrt(2) * ARCSEC / cosd]),
        np.array([dec0 + offset / np.sqrt(2) * ARCSEC]),
        [src_err],
    )
    result = AssociationTask().run(src, obj)
    assert (result.nUpdatedDiaObjects == 1) is expected
    assert len(result.unAssocDiaSources) == (0 if expected else 1)


def test_radius_settings_are_configurable():
    obj = _objects(np.array([100.0]), np.array([0.0]), [0.3])
    src = _sources(np.array([100.0 + 1.9 * ARCSEC]), np.array([0.0]), [0.3])
    assert AssociationTask().run(src, obj).nUpdatedDiaObjects == 1
    config = AssociationConfig(radius_nsigma=3.0)  # 3 x 0.42" = 1.27"
    assert AssociationTask(config=config).run(src, obj).nUpdatedDiaObjects == 0
    config = AssociationConfig(maxDistArcSeconds=1.0)
    assert AssociationTask(config=config).run(src, obj).nUpdatedDiaObjects == 0
    precise = _objects(np.array([100.0]), np.array([0.0]), [0.01])
    near = _sources(np.array([100.0 + 0.7 * ARCSEC]), np.array([0.0]), [0.01])
    assert AssociationTask().run(near, precise).nUpdatedDiaObjects == 0
    config = AssociationConfig(min_radius_arcsec=0.8)
    assert AssociationTask(config=config).run(near, precise).nUpdatedDiaObjects == 1


def test_noise_detection_next_to_an_undetected_object_starts_a_new_object():
    # a well measured object (12 detections of 0.1": 0.03") is not detected in
    # this visit; a noise detection 0.8" away (inside the old fixed 1" radius)
    # is 7.6 sigma off and must seed its own object, while a real detection
    # 0.25" away from a second such object still matches it
    obj = _objects(np.array([10.0, 10.01]), np.array([-5.0, -5.0]), [0.03, 0.03])
    cosd = np.cos(np.radians(-5.0))
    src = _sources(
        np.array([10.0 + 0.8 * ARCSEC / cosd, 10.01 + 0.25 * ARCSEC / cosd]),
        np.array([-5.0, -5.0]),
        [0.1, 0.1],
    )
    result = AssociationTask().run(src, obj)
    assert result.unAssocDiaSources.diaSourceId.tolist() == [src.diaSourceId[0]]
    assert result.matchedDiaSources.diaObjectId.tolist() == [obj.diaObjectId[1]]


def test_ra_dec_covariance_shapes_the_likelihood():
    # an object elongated along the north-east diagonal (correlation 0.9):
    # a source 0.8" off along the long axis matches, one 0.8" off across it does not
    dec0 = 20.0
    cosd = np.cos(np.radians(dec0))
    sig, rho = 0.3, 0.9
    obj = _objects(np.array([50.0, 50.1]), np.array([dec0, dec0]), [sig, sig])
    obj["ra_dec_Cov"] = rho * sig**2 * ARCSEC**2 / cosd
    d = 0.8 / np.sqrt(2)
    src = _sources(
        np.array([50.0 + d * ARCSEC / cosd, 50.1 + d * ARCSEC / cosd]),
        np.array([dec0 + d * ARCSEC, dec0 - d * ARCSEC]),
        [0.02, 0.02],
    )
    task = AssociationTask(config=AssociationConfig(min_radius_arcsec=0.1))
    pairs = task.find_candidates(obj, src)
    # both are inside 5 sigma of the long axis (5 x 0.41" = 2.1")
    assert len(pairs.src) == 2
    cost, _ = task.score(obj, src, pairs)
    along, across = cost[np.argsort(pairs.src)]
    # Mahalanobis^2 / 2 with the eigenvalues (1 +- rho) sig^2 + 0.02^2 of the summed covariance
    long_axis, short_axis = (1 + rho) * sig**2 + 0.02**2, (1 - rho) * sig**2 + 0.02**2
    assert across - along == pytest.approx(0.5 * 0.64 * (1 / short_axis - 1 / long_axis), rel=1e-3)
