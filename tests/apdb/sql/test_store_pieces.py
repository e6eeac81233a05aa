"""Stores whose COPY streams go in many pieces and whose DiaObjects are encoded ahead.

`apdb.sql.writes` sends a COPY stream in pieces of ``COPY_PIECE_ROWS`` rows
and, from ``ENCODE_AHEAD_ROWS`` DiaObjects, encodes the new versions while
the server runs the version fix-up (re-encoding them when a late store finds
newer versions).  Both thresholds are lowered here so that the small visits
of `visit_plans` take those paths; the histories must be the ones the plan
implies, on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.sql import writes
from tests.apdb.sql.visit_plans import (
    actual_chains,
    assert_chains_equal,
    expected_chains,
    integrity,
    visit_frames,
    visit_mjd,
)


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes, "COPY_PIECE_ROWS", 7)
    monkeypatch.setattr(writes, "ENCODE_AHEAD_ROWS", 1)


@pytest.mark.parametrize("order", [(1, 2, 3, 4), (3, 1, 4, 2), (4, 3, 2, 1)])
def test_histories_with_pieces_and_encoding_ahead(apdb: Apdb, small_pieces, order) -> None:
    shared = np.arange(1, 51, dtype=np.int64)
    odd = np.arange(51, 61, dtype=np.int64)
    plan = []
    for v in order:
        ids = np.concatenate([shared, odd]) if v % 2 else shared
        plan.append((v, 1, ids.tolist()))
        apdb.store(*visit_frames(v, 1, ids))
    assert_chains_equal(actual_chains(apdb), expected_chains(plan))
    counts = apdb.row_counts()
    assert counts["DiaSource"] == sum(len(ids) for _, _, ids in plan)
    assert counts["DiaObject"] == sum(len(ids) for _, _, ids in plan)
    assert all(v == 0 for v in integrity(apdb).values())
    # Every stored source is read back with its values (the pieces join up).
    _, _, sources, _ = visit_frames(order[-1], 1, np.asarray(plan[-1][2]))
    since = Time(visit_mjd(1) - 1.0, format="mjd", scale="tai")
    got = apdb.get_dia_sources_for_dia_objects(shared[:5], since)
    got = got[got["visit"] == sources["visit"].iloc[0]].sort_values("diaSourceId")
    want = sources[sources["diaObjectId"].isin(shared[:5])].sort_values("diaSourceId")
    np.testing.assert_array_equal(got["diaSourceId"].to_numpy(), want["diaSourceId"].to_numpy())
    np.testing.assert_allclose(got["psfFlux"].to_numpy(float), want["psfFlux"].to_numpy(float))
