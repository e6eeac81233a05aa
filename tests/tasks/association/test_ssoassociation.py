"""Tests of SsSingleFrameAssociationTask on a real Exposure with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.association import SsSingleFrameAssociationTask
from tasks.core.base import TaskError
from tasks.images import Box2I, Exposure, make_tan_wcs

ARCSEC = 1.0 / 3600.0
SCALE = 0.2  # arcsec / pixel


def make_exposure(size=512, ra=100.0, dec=-20.0):
    wcs = make_tan_wcs(ra, dec, (size / 2, size / 2), SCALE, rotation_deg=30.0)
    shape = (size, size)
    return Exposure(
        np.zeros(shape, np.float32), None, np.ones(shape, np.float32), wcs, Box2I(0, 0, size, size)
    )


def scenario(seed=5):
    """SSOs on the image, one just off it (inside the margin), one far away."""
    rng = np.random.default_rng(seed)
    exposure = make_exposure()
    n_on = 20
    x = rng.uniform(10, 500, n_on)
    y = rng.uniform(10, 500, n_on)
    ra, dec = exposure.pixel_to_sky(x, y)
    ssos = pd.DataFrame(
        {
            "ssObjectId": np.arange(n_on, dtype=np.int64) + 5000,
            "ra": ra,
            "dec": dec,
            "mag": rng.uniform(18, 22, n_on),
            "raRate": rng.normal(0, 0.2, n_on),
            "decRate": rng.normal(0, 0.2, n_on),
        }
    )
    far_ra, far_dec = exposure.pixel_to_sky(np.array([-50.0, 5000.0]), np.array([100.0, 100.0]))
    ssos = pd.concat(
        [ssos, pd.DataFrame({"ssObjectId": [9001, 9002], "ra": far_ra, "dec": far_dec})],
        ignore_index=True,
    )
    # detections: 15 of the on-image SSOs (0.1" noise), plus 30 unrelated sources
    seen = np.arange(15)
    noise = 0.1 * ARCSEC
    cosd = np.cos(np.radians(dec[seen]))
    s_ra = ra[seen] + rng.normal(0, noise, 15) / cosd
    s_dec = dec[seen] + rng.normal(0, noise, 15)
    ox, oy = rng.uniform(0, 512, 30), rng.uniform(0, 512, 30)
    o_ra, o_dec = exposure.pixel_to_sky(ox, oy)
    sources = pd.DataFrame(
        {
            "diaSourceId": np.arange(45, dtype=np.int64) + 1,
            "ra": np.concatenate((s_ra, o_ra)),
            "dec": np.concatenate((s_dec, o_dec)),
            "psfFlux": 100.0,
        }
    )
    return exposure, ssos, sources


def test_associates_with_truth():
    exposure, ssos, sources = scenario()
    result = SsSingleFrameAssociationTask().run(exposure, sources, "r", ssos)
    assert result.noWorkReason is None
    # 20 on the image + 1 within the 100 px margin; the far one is excluded
    assert result.nTotalSsObjects == 21
    assert result.nAssociatedSsObjects == 15
    got = dict(
        zip(
            result.ssoAssocDiaSources.diaSourceId, result.ssoAssocDiaSources.ssObjectId, strict=True
        )
    )
    assert got == {i + 1: 5000 + i for i in range(15)}
    assert result.ssoAssocDiaSources.diaObjectId.isna().all()
    assert sorted(result.unAssocDiaSources.diaSourceId) == list(range(16, 46))
    assert sorted(result.unassociatedSsObjects.ssObjectId) == [*range(5015, 5020), 9001]
    ss = result.associatedSsSources.set_index("diaSourceId").loc[list(got)]
    # offsets in arcsec, consistent with the total offset and of the size of the noise
    np.testing.assert_allclose(np.hypot(ss.ephOffsetRa, ss.ephOffsetDec), ss.ephOffset, rtol=1e-3)
    assert ss.ephOffset.max() < 0.5
    np.testing.assert_allclose(
        np.hypot(ss.ephOffsetAlongTrack, ss.ephOffsetCrossTrack), ss.ephOffset, rtol=1e-3
    )
    assert ss.ephVmag.notna().all() and ss.galLat.notna().all() and ss.eclBeta.notna().all()


def test_greedy_one_to_one_nearest_wins():
    exposure = make_exposure()
    ra0, dec0 = exposure.pixel_to_sky(np.array([200.0]), np.array([200.0]))
    ssos = pd.DataFrame(
        {"ssObjectId": [1, 2], "ra": [ra0[0], ra0[0]], "dec": [dec0[0], dec0[0] + 0.5 * ARCSEC]}
    )
    sources = pd.DataFrame(
        {
            "diaSourceId": [10, 11],
            "ra": [ra0[0], ra0[0]],
            "dec": [dec0[0] + 0.1 * ARCSEC, dec0[0] + 2.0 * ARCSEC],
        }
    )
    result = SsSingleFrameAssociationTask().associateSources(sources, ssos, exposure)
    # source 10 is nearest to SSO 1 (0.1") and SSO 2 (0.4"): SSO 1 takes it;
    # SSO 2's only other candidate is 1.5" away, beyond the radius
    assert result.ssoAssocDiaSources.diaSourceId.tolist() == [10]
    assert result.ssoAssocDiaSources.ssObjectId.tolist() == [1]
    assert result.unassociatedSsObjects.ssObjectId.tolist() == [2]


def test_no_sso_table_is_no_work():
    exposure, _, sources = scenario()
    result = SsSingleFrameAssociationTask().run(exposure, sources, "g", None)
    assert result.noWorkReason
    assert len(result.ssoAssocDiaSources) == 0
    assert len(result.associatedSsSources) == 0
    pd.testing.assert_frame_equal(result.unAssocDiaSources, sources)


def test_bad_sso_tables():
    exposure, ssos, sources = scenario()
    task = SsSingleFrameAssociationTask()
    with pytest.raises(TaskError, match="lacks columns"):
        task.run(exposure, sources, "r", ssos.drop(columns=["dec"]))
    with pytest.raises(TaskError, match="duplicate ssObjectId"):
        task.run(exposure, sources, "r", ssos.assign(ssObjectId=1))
    nan_ssos = ssos.copy()
    nan_ssos.loc[0, "ra"] = np.nan
    result = task.run(exposure, sources, "r", nan_ssos)
    assert result.nAssociatedSsObjects == 14
