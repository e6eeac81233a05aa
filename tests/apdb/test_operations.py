"""Rubin's daytime APDB operations, mirroring ``lsst.dax.apdb.tests._apdb`` (both backends).

Deduplication reads (`get_dia_objects_for_dedup`, `reset_dedup`,
`get_dia_sources_for_dia_objects`), `reassign_dia_sources_to_dia_objects`,
`set_validity_end`, withdrawal of sources and forced sources, and the
explicit history window start.  Every bad call is checked to leave the
database exactly as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time, TimeDelta

from apdb.errors import ApdbInputError, DuplicateIdError, UnknownIdError
from apdb.sky import Cone
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

ONE_SEC = TimeDelta(1.0, format="sec")


def _tai(text: str) -> Time:
    return Time(text, format="isot", scale="tai")


def _objects(ids, ra: float, dec: float, seed: int = 1, radius: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids, dtype=np.int64)
    r, d = random_positions(len(ids), ra, dec, radius, rng)
    return make_dia_objects(ids, r, d, rng)


def _sources(objects: pd.DataFrame, first_id: int, t: Time, visit: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(first_id)
    n = len(objects)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    oids = objects["diaObjectId"].to_numpy()
    ra, dec = objects["ra"].to_numpy(), objects["dec"].to_numpy()
    return make_dia_sources(ids, oids, ra, dec, visit, 1, float(t.tai.mjd), rng)


def _forced(objects: pd.DataFrame, first_id: int, t: Time, visit: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(first_id)
    n = len(objects)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    oids = objects["diaObjectId"].to_numpy()
    ra, dec = objects["ra"].to_numpy(), objects["dec"].to_numpy()
    return make_dia_forced_sources(ids, oids, ra, dec, visit, 1, float(t.tai.mjd), rng)


def _snapshot(apdb, cone: Cone, t: Time) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Everything a bad call must leave unchanged."""
    objects = apdb.get_dia_objects(cone).sort_values("diaObjectId").reset_index(drop=True)
    sources = apdb.get_dia_sources(t, region=cone, include_withdrawn=True)
    forced = apdb.get_dia_forced_sources(t, region=cone, include_withdrawn=True)
    key_s, key_f = "diaSourceId", "diaForcedSourceId"
    return (
        objects,
        sources.sort_values(key_s).reset_index(drop=True),
        forced.sort_values(key_f).reset_index(drop=True),
    )


def _assert_unchanged(before, after) -> None:
    for a, b in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(a, b)


# -- set_validity_end ---------------------------------------------------------------
def test_set_validity_end_closes_10_of_100(apdb):
    visit = _tai("2021-01-01T00:00:00")
    end = _tai("2021-01-02T00:00:00")
    cone = Cone(45.0, 10.0, 0.2)
    objects = _objects(np.arange(1, 101), 45.0, 10.0)
    apdb.store(visit, objects)
    assert len(apdb.get_dia_objects(cone)) == 100

    assert apdb.set_validity_end(objects.iloc[:10], end) == 10
    left = apdb.get_dia_objects(cone)
    assert sorted(left["diaObjectId"]) == list(range(11, 101))
    # Closed objects are not offered to deduplication either.
    assert sorted(apdb.get_dia_objects_for_dedup()["diaObjectId"]) == list(range(11, 101))

    # A repeat finds nothing open.
    assert apdb.set_validity_end(objects.iloc[:10], end) == 0

    # Objects 11, 12 and an unknown one: with raise_on_missing_id nothing changes.
    ids = [11, 12, 1_000_000]
    with pytest.raises(UnknownIdError, match="1000000"):
        apdb.set_validity_end(ids, end, raise_on_missing_id=True)
    assert len(apdb.get_dia_objects(cone)) == 90
    # Without it, the known ones are closed and counted.
    assert apdb.set_validity_end(ids, end) == 2
    assert len(apdb.get_dia_objects(cone)) == 88
    assert apdb.set_validity_end([], end) == 0


def test_set_validity_end_before_the_version_start_is_refused(apdb):
    visit = _tai("2021-01-01T00:00:00")
    cone = Cone(45.0, 10.0, 0.2)
    apdb.store(visit, _objects([1, 2, 3], 45.0, 10.0))
    with pytest.raises(ApdbInputError, match="before validityStartMjdTai"):
        apdb.set_validity_end([1, 2], visit - ONE_SEC)
    assert sorted(apdb.get_dia_objects(cone)["diaObjectId"]) == [1, 2, 3]
    # Ending exactly at the start is allowed (an empty interval).
    assert apdb.set_validity_end([1], visit) == 1


# -- history window start --------------------------------------------------------------
@pytest.mark.parametrize("forced", [False, True], ids=["DiaSource", "DiaForcedSource"])
def test_360_day_window_is_exact_to_the_second(apdb, forced):
    # 2021-01-01 plus 360 days is 2021-12-27.
    src_time1 = _tai("2021-01-01T00:00:00")
    src_time2 = _tai("2021-01-01T00:00:02")
    objects = _objects(np.arange(1, 101), 45.0, 10.0)
    oids = objects["diaObjectId"].to_numpy()
    if forced:
        apdb.store(src_time1, objects, dia_forced_sources=_forced(objects, 1, src_time1, 1))
        apdb.store(src_time2, objects, dia_forced_sources=_forced(objects, 101, src_time2, 2))
        read = apdb.get_dia_forced_sources
    else:
        apdb.store(src_time1, objects, _sources(objects, 1, src_time1, 1))
        apdb.store(src_time2, objects, _sources(objects, 101, src_time2, 2))
        read = apdb.get_dia_sources
    cone = Cone(45.0, 10.0, 0.2)

    # One second before the window loses the first visit: all 200.
    assert len(read(_tai("2021-12-26T23:59:59"), cone, oids)) == 200
    # One second after: only the second visit (2 s later) is left.
    assert len(read(_tai("2021-12-27T00:00:01"), cone, oids)) == 100
    assert len(read(_tai("2021-12-27T00:00:03"), cone, oids)) == 0

    # An explicit start overrides the 12-month window.
    later = _tai("2022-06-01T00:00:00")
    assert len(read(later, cone, oids)) == 0
    assert len(read(later, cone, oids, start_time=src_time1 - ONE_SEC)) == 200
    assert len(read(later, cone, oids, start_time=src_time1)) == 200  # inclusive
    assert len(read(later, cone, oids, start_time=src_time2 - ONE_SEC)) == 100
    assert len(read(later, cone, oids, start_time=src_time2 + ONE_SEC)) == 0
    # The window still ends (exclusive) at the visit time.
    assert len(read(src_time2, cone, oids, start_time=src_time1 - ONE_SEC)) == 100


def test_explicit_window_start_is_checked(apdb):
    t = _tai("2021-01-01T00:00:00")
    with pytest.raises(ApdbInputError, match="after visit_time"):
        apdb.get_dia_sources(t, object_ids=[1], start_time=t + ONE_SEC)
    with pytest.raises(ApdbInputError, match="not both"):
        apdb.get_dia_forced_sources(t, object_ids=[1], months=3, start_time=t - ONE_SEC)
    with pytest.raises(ApdbInputError, match="start_time"):
        apdb.get_dia_sources(t, object_ids=[1], start_time=59000.0)


# -- deduplication -----------------------------------------------------------------------
def _three_regions(apdb, with_sources: bool = False):
    visits = [
        (_tai("2021-01-01T00:00:00"), _objects(np.arange(1, 101), 10.0, 10.0)),
        (_tai("2021-01-01T00:10:00"), _objects(np.arange(200, 300), 130.0, 10.0)),
        (_tai("2021-01-01T00:20:00"), _objects(np.arange(400, 500), 250.0, -10.0)),
    ]
    first = 1_000_000
    for i, (t, objects) in enumerate(visits):
        sources = _sources(objects, first, t, visit=i + 1) if with_sources else None
        apdb.store(t, objects, sources)
        first += 1_000_000
    return visits


def test_get_dia_objects_for_dedup_since(apdb):
    visits = _three_regions(apdb)
    assert len(apdb.get_dia_objects_for_dedup()) == 300
    assert len(apdb.get_dia_objects_for_dedup(visits[0][0])) == 300
    assert len(apdb.get_dia_objects_for_dedup(visits[1][0])) == 200
    got = apdb.get_dia_objects_for_dedup(visits[2][0])
    assert sorted(got["diaObjectId"]) == list(range(400, 500))
    empty = apdb.get_dia_objects_for_dedup(_tai("2021-01-01T00:30:00"))
    assert len(empty) == 0
    pd.testing.assert_series_equal(empty.dtypes, got.dtypes)
    # Rubin's default column subset, with the stored values.
    assert list(got.columns) == [
        "diaObjectId",
        "validityStartMjdTai",
        "ra",
        "dec",
        "nDiaSources",
        "firstDiaSourceMjdTai",
    ]
    assert np.all(got["validityStartMjdTai"] == visits[2][0].tai.mjd)
    expected = visits[2][1].set_index("diaObjectId").loc[got["diaObjectId"]]
    np.testing.assert_array_equal(got["ra"].to_numpy(), expected["ra"].to_numpy())


def test_reset_dedup_moves_the_default_since(apdb):
    objects = _objects(np.arange(1, 101), 45.0, 10.0)
    visit_time1 = _tai("2021-01-01T00:00:00")
    dedup_time1 = _tai("2021-01-01T12:00:00")
    visit_time2 = _tai("2021-01-02T00:00:00")
    dedup_time2 = _tai("2021-01-02T12:00:00")

    apdb.store(visit_time1, objects)
    assert len(apdb.get_dia_objects_for_dedup()) == 100
    assert len(apdb.get_dia_objects_for_dedup(visit_time1)) == 100
    apdb.reset_dedup(dedup_time1)
    # The SQL APDB keeps the objects: an explicit since still finds them.
    assert len(apdb.get_dia_objects_for_dedup(visit_time1)) == 100
    assert len(apdb.get_dia_objects_for_dedup()) == 0

    apdb.store(visit_time2, objects)
    assert len(apdb.get_dia_objects_for_dedup()) == 100
    assert len(apdb.get_dia_objects_for_dedup(dedup_time1)) == 100
    apdb.reset_dedup(dedup_time2)
    assert len(apdb.get_dia_objects_for_dedup(dedup_time1)) == 100
    assert len(apdb.get_dia_objects_for_dedup()) == 0
    assert "2021-01-02 12:00:00" in apdb.metadata.get("status:deduplication.json")

    # Without a time, now is recorded: nothing stored in 2021 comes after it.
    apdb.reset_dedup()
    assert len(apdb.get_dia_objects_for_dedup()) == 0


def test_get_dia_sources_for_dia_objects(apdb):
    visits = _three_regions(apdb, with_sources=True)
    chosen = pd.concat([objects.iloc[:1] for _, objects in visits])
    assert chosen["diaObjectId"].tolist() == [1, 200, 400]

    got = apdb.get_dia_sources_for_dia_objects(chosen, visits[0][0])
    assert set(got["diaObjectId"]) == {1, 200, 400}
    assert set(got["diaSourceId"]) == {1_000_000, 2_000_000, 3_000_000}

    got = apdb.get_dia_sources_for_dia_objects([1, 200, 400], visits[2][0])
    assert set(got["diaSourceId"]) == {3_000_000}

    # Withdrawn sources are included, marked, so that a merge moves them too.
    when = _tai("2021-01-01T10:00:00")
    apdb.withdraw_dia_sources([1_000_000], time_withdrawn=when)
    got = apdb.get_dia_sources_for_dia_objects([1], visits[0][0])
    assert got.set_index("diaSourceId").loc[1_000_000, "timeWithdrawnMjdTai"] == when.tai.mjd

    for empty in (
        apdb.get_dia_sources_for_dia_objects([], visits[0][0]),
        apdb.get_dia_sources_for_dia_objects([1], _tai("2022-01-01T00:00:00")),
    ):
        assert len(empty) == 0
        assert list(empty.columns) == list(got.columns)
    with pytest.raises(ApdbInputError, match="max_dist_arcsec"):
        apdb.get_dia_sources_for_dia_objects([1], visits[0][0], max_dist_arcsec=-1.0)
    with pytest.raises(ApdbInputError, match="max_dist_arcsec"):
        apdb.get_dia_sources_for_dia_objects([1], visits[0][0], max_dist_arcsec=float("nan"))


# -- reassign_dia_sources_to_dia_objects --------------------------------------------------
def _two_clusters(apdb, visit_time: Time):
    """Objects 100-102 (sources 1000-1002) near (10, 0), 200-202 (2000-2002) near (190, 0)."""
    for first, ra, src in ((100, 10.0, 1000), (200, 190.0, 2000)):
        objects = _objects(np.arange(first, first + 3), ra, 0.0, radius=0.001)
        apdb.store(visit_time, objects, _sources(objects, src, visit_time, visit=first))
    return Cone(10.0, 0.0, 0.1), Cone(190.0, 0.0, 0.1)


def _counts(apdb, cone: Cone) -> dict[int, int]:
    objects = apdb.get_dia_objects(cone)
    return dict(zip(objects["diaObjectId"].tolist(), objects["nDiaSources"].tolist(), strict=True))


def test_reassigned_sources_move_their_counts(apdb):
    visit_time = _tai("2021-01-01T00:00:00")
    later = visit_time + TimeDelta(1.0, format="jd")
    region1, region2 = _two_clusters(apdb, visit_time)
    assert _counts(apdb, region1) == {100: 1, 101: 1, 102: 1}

    apdb.reassign_dia_sources_to_dia_objects({1001: 100, 1002: 100})
    assert _counts(apdb, region1) == {100: 3, 101: 0, 102: 0}
    sources = apdb.get_dia_sources(later, region1, [100])
    assert set(sources["diaSourceId"]) == {1000, 1001, 1002}
    assert set(sources["diaObjectId"]) == {100}
    assert len(apdb.get_dia_sources(later, region1, [101, 102])) == 0

    # Without count changes (a frame as the map).
    frame = pd.DataFrame({"diaSourceId": [2001, 2002], "diaObjectId": [200, 200]})
    apdb.reassign_dia_sources_to_dia_objects(
        frame, increment_n_dia_sources=False, decrement_n_dia_sources=False
    )
    assert _counts(apdb, region2) == {200: 1, 201: 1, 202: 1}
    assert set(apdb.get_dia_sources(later, region2, [200])["diaSourceId"]) == {2000, 2001, 2002}

    # Only the increment: the targets gain, the objects left keep their count.
    apdb.reassign_dia_sources_to_dia_objects({2001: 201}, decrement_n_dia_sources=False)
    assert _counts(apdb, region2) == {200: 1, 201: 2, 202: 1}
    # A source moved to the object it is on changes no count.
    apdb.reassign_dia_sources_to_dia_objects({2000: 200})
    assert _counts(apdb, region2) == {200: 1, 201: 2, 202: 1}

    # The usual deduplication sequence: reassign, then close the merged objects.
    assert apdb.set_validity_end([101, 102], later) == 2
    assert _counts(apdb, region1) == {100: 3}


@pytest.mark.parametrize(
    "id_map",
    [
        {1001: 100, 9999: 100},  # unknown source
        {1001: 100, 1002: 5555},  # unknown target
        {1001: 102},  # target closed below
    ],
    ids=["unknown-source", "unknown-object", "closed-object"],
)
def test_reassign_with_unknown_ids_changes_nothing(apdb, id_map):
    visit_time = _tai("2021-01-01T00:00:00")
    region1, region2 = _two_clusters(apdb, visit_time)
    apdb.set_validity_end([102], visit_time)
    later = visit_time + TimeDelta(1.0, format="jd")
    before = _snapshot(apdb, region1, later)
    with pytest.raises(UnknownIdError):
        apdb.reassign_dia_sources_to_dia_objects(id_map)
    _assert_unchanged(before, _snapshot(apdb, region1, later))


def test_reassign_rejects_malformed_maps(apdb):
    visit_time = _tai("2021-01-01T00:00:00")
    region1, _ = _two_clusters(apdb, visit_time)
    later = visit_time + TimeDelta(1.0, format="jd")
    before = _snapshot(apdb, region1, later)
    twice = pd.DataFrame({"diaSourceId": [1001, 1001], "diaObjectId": [100, 101]})
    with pytest.raises(DuplicateIdError):
        apdb.reassign_dia_sources_to_dia_objects(twice)
    with pytest.raises(ApdbInputError, match="negative"):
        apdb.reassign_dia_sources_to_dia_objects({1001: -100})
    with pytest.raises(ApdbInputError, match="diaObjectId"):
        apdb.reassign_dia_sources_to_dia_objects(pd.DataFrame({"diaSourceId": [1001]}))
    with pytest.raises(ApdbInputError):
        apdb.reassign_dia_sources_to_dia_objects({"1001": "x"})
    _assert_unchanged(before, _snapshot(apdb, region1, later))
    apdb.reassign_dia_sources_to_dia_objects({})  # nothing to do


# -- withdrawal ----------------------------------------------------------------------------
def test_withdraw_dia_sources_twice_is_once(apdb):
    visit_time1 = _tai("2021-01-01T00:00:00")
    visit_time2 = _tai("2021-01-01T00:01:00")
    objects1 = _objects([100, 101, 102], 0.5, 0.0, radius=0.001)
    apdb.store(visit_time1, objects1, _sources(objects1, 1000, visit_time1, 1))
    objects2 = _objects([200, 201, 202], 45.0, 0.0, radius=0.001)
    apdb.store(visit_time2, objects2, _sources(objects2, 2000, visit_time2, 2))
    region1, region2 = Cone(0.5, 0.0, 0.1), Cone(45.0, 0.0, 0.1)
    read_at = visit_time2 + ONE_SEC
    for region in (region1, region2):
        assert apdb.get_dia_sources(read_at, region)["timeWithdrawnMjdTai"].isna().all()

    withdraw_time1 = _tai("2021-01-01T10:00:00")
    withdraw_time2 = _tai("2021-01-02T10:00:00")
    assert apdb.withdraw_dia_sources([1000, 2001], time_withdrawn=withdraw_time1) == 2
    # 1000 a second time: it keeps its first time and is not counted.
    assert apdb.withdraw_dia_sources([1000, 2000, 1002], time_withdrawn=withdraw_time2) == 2

    def withdrawn(region):
        got = apdb.get_dia_sources(read_at, region, include_withdrawn=True)
        return got.set_index("diaSourceId")["timeWithdrawnMjdTai"].to_dict()

    got1, got2 = withdrawn(region1), withdrawn(region2)
    assert got1[1000] == withdraw_time1.mjd and got1[1002] == withdraw_time2.mjd
    assert got2[2000] == withdraw_time2.mjd and got2[2001] == withdraw_time1.mjd
    assert np.isnan(got1[1001]) and np.isnan(got2[2002])

    # History reads leave withdrawn sources out.
    assert apdb.get_dia_sources(read_at, region1)["diaSourceId"].tolist() == [1001]
    ids = [100, 101, 102, 200, 201, 202]
    assert sorted(apdb.get_dia_sources(read_at, object_ids=ids)["diaSourceId"]) == [1001, 2002]

    # All withdrawn again: nothing changes.
    before = (withdrawn(region1), withdrawn(region2))
    assert apdb.withdraw_dia_sources([1000, 1002, 2000, 2001]) == 0
    for a, b in zip(before, (withdrawn(region1), withdrawn(region2)), strict=True):
        pd.testing.assert_series_equal(pd.Series(a).sort_index(), pd.Series(b).sort_index())


def test_withdraw_dia_forced_sources_twice_is_once(apdb):
    visit_time = _tai("2021-01-01T00:00:00")
    objects = _objects([100, 101, 102], 0.5, 0.0, radius=0.001)
    apdb.store(visit_time, objects, dia_forced_sources=_forced(objects, 10, visit_time))
    region = Cone(0.5, 0.0, 0.1)
    read_at = visit_time + ONE_SEC

    withdraw_time1 = _tai("2021-01-01T10:00:00")
    withdraw_time2 = _tai("2021-01-02T10:00:00")
    frame = apdb.get_dia_forced_sources(read_at, region, [100, 102])
    assert apdb.withdraw_dia_forced_sources(frame, time_withdrawn=withdraw_time1) == 2
    assert apdb.withdraw_dia_forced_sources([11, 12], time_withdrawn=withdraw_time2) == 1

    got = apdb.get_dia_forced_sources(read_at, region, [100, 101, 102], include_withdrawn=True)
    times = got.set_index("diaObjectId")["timeWithdrawnMjdTai"].to_dict()
    assert times == {100: withdraw_time1.mjd, 101: withdraw_time2.mjd, 102: withdraw_time1.mjd}
    assert len(apdb.get_dia_forced_sources(read_at, region, [100, 101, 102])) == 0


@pytest.mark.parametrize("forced", [False, True], ids=["DiaSource", "DiaForcedSource"])
def test_withdraw_unknown_ids_changes_nothing(apdb, forced):
    visit_time = _tai("2021-01-01T00:00:00")
    objects = _objects([100, 101, 102], 0.5, 0.0, radius=0.001)
    apdb.store(
        visit_time,
        objects,
        _sources(objects, 1000, visit_time),
        _forced(objects, 5000, visit_time),
    )
    region = Cone(0.5, 0.0, 0.1)
    read_at = visit_time + ONE_SEC
    before = _snapshot(apdb, region, read_at)
    withdraw = apdb.withdraw_dia_forced_sources if forced else apdb.withdraw_dia_sources
    known = 5000 if forced else 1000
    with pytest.raises(UnknownIdError, match="424242"):
        withdraw([known, 424242])
    with pytest.raises(ApdbInputError, match="negative"):
        withdraw([known, -1])
    with pytest.raises(ApdbInputError):
        withdraw("1000")
    with pytest.raises(ApdbInputError, match="time_withdrawn"):
        withdraw([known], time_withdrawn="2021-01-01")
    _assert_unchanged(before, _snapshot(apdb, region, read_at))
    assert withdraw([]) == 0


def test_dia_object_to_object_match_table_exists(apdb):
    counts = apdb.row_counts()
    assert counts["DiaObject_To_Object_Match"] == 0
    table = apdb.schema_metadata.tables["DiaObject_To_Object_Match"]
    assert [c.name for c in table.columns] == ["diaObjectId", "objectId", "dist", "lnP"]


# -- large calls -------------------------------------------------------------------------
def test_large_calls_lock_rows_not_each_object(apdb, monkeypatch):
    """Beyond MAX_LOCKED_OBJECTS a call takes no advisory lock per object, same results."""
    import apdb.sql.updates as updates

    locked: list[object] = []
    original = updates.write_transaction

    def spy(engine, work, *, what, object_ids=None, **kwargs):
        locked.append(None if object_ids is None else len(object_ids))
        return original(engine, work, what=what, object_ids=object_ids, **kwargs)

    monkeypatch.setattr(updates, "MAX_LOCKED_OBJECTS", 50)
    monkeypatch.setattr(updates, "write_transaction", spy)
    t = _tai("2021-01-01T00:00:00")
    objects = _objects(np.arange(1, 301), 45.0, 10.0, radius=0.1)
    apdb.store(t, objects, _sources(objects, 10_000, t))

    # 150 sources move from the odd objects to the next even ones: 300 objects.
    moves = {10_000 + i - 1: i + 1 for i in range(1, 301, 2)}
    apdb.reassign_dia_sources_to_dia_objects(moves)
    counts = _counts(apdb, Cone(45.0, 10.0, 0.3))
    assert all(counts[i] == (0 if i % 2 else 2) for i in range(1, 301))
    # 200 objects closed, then 20 (locked individually: under the limit).
    assert apdb.set_validity_end(np.arange(1, 201), t + ONE_SEC) == 200
    assert apdb.set_validity_end(np.arange(201, 221), t + ONE_SEC) == 20
    assert len(apdb.get_dia_objects(Cone(45.0, 10.0, 0.3))) == 80
    assert locked == [None, None, 20]


def test_set_validity_end_beyond_the_server_lock_table(server_apdb_url):
    """More objects in one call than PostgreSQL's shared lock table could hold."""
    from apdb import Apdb

    t = _tai("2021-01-01T00:00:00")
    with Apdb.from_url(server_apdb_url) as db:
        with db.engine.connect() as conn:
            slots = 1
            for name in ("max_locks_per_transaction", "max_connections"):
                slots *= int(conn.exec_driver_sql(f"SHOW {name}").scalar())
        chunk = 2000
        n = chunk * -(-4 * slots // chunk)  # 26,000 objects with the defaults (64 x 100)
        for k in range(0, n, chunk):  # stores of 2,000 objects stay within the table
            ids = np.arange(1 + k, 1 + k + chunk)
            db.store(t + k * ONE_SEC, _objects(ids, 45.0, 10.0, seed=k, radius=0.5))
        assert db.set_validity_end(np.arange(1, n + 1), t + (n + 1) * ONE_SEC) == n
        assert len(db.get_dia_objects_for_dedup()) == 0
