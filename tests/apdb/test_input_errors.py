"""Bad input raises an ApdbError subclass and leaves the database exactly as it was."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.errors import (
    AlreadyStoredError,
    ApdbInputError,
    ColumnTypeError,
    DuplicateIdError,
    InvalidCoordinatesError,
    InvalidIdError,
    InvalidTimeError,
    MissingColumnsError,
    NullValueError,
    SuspiciousStringError,
    UnknownBandError,
    UnknownObjectError,
)
from apdb.sky import Cone
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

RA, DEC = 30.0, -20.0
T0 = Time(60000.0, format="mjd", scale="tai")
T1 = Time(60001.0, format="mjd", scale="tai")


@pytest.fixture
def seeded(apdb):
    """An APDB holding one visit, and fresh frames of a second visit."""
    rng = np.random.default_rng(11)
    ids = np.arange(1, 21, dtype=np.int64)
    ra, dec = random_positions(20, RA, DEC, 0.05, rng)
    apdb.store(
        T0,
        make_dia_objects(ids, ra, dec, rng),
        make_dia_sources(ids + 100, ids, ra, dec, 1, 1, T0.mjd, rng),
        make_dia_forced_sources(ids + 100, ids, ra, dec, 1, 1, T0.mjd, rng),
    )
    frames = {
        "dia_objects": make_dia_objects(ids, ra, dec, rng, n_sources=2),
        "dia_sources": make_dia_sources(ids + 200, ids, ra, dec, 2, 1, T1.mjd, rng),
        "dia_forced_sources": make_dia_forced_sources(ids + 200, ids, ra, dec, 2, 1, T1.mjd, rng),
    }
    return apdb, frames


def _snapshot(apdb):
    """Everything a failed store could have touched."""
    objects = apdb.get_dia_objects(Cone(RA, DEC, 1.0)).sort_values("diaObjectId")
    sources = apdb.get_dia_sources(Time(60010.0, format="mjd", scale="tai"))
    return apdb.row_counts(), objects.reset_index(drop=True), len(sources)


def _assert_unchanged(apdb, before):
    counts, objects, n_sources = _snapshot(apdb)
    assert counts == before[0]
    pd.testing.assert_frame_equal(objects, before[1])
    assert n_sources == before[2]
    assert not apdb.contains_visit_detector(2, 1)


def _bad(frames, name, **changes):
    df = frames[name].copy()
    for column, value in changes.items():
        if value is _DROP:
            df = df.drop(columns=[column])
        else:
            df[column] = value
    return {**frames, name: df}


_DROP = object()


def _col(values, n=20, at=3, bad=None):
    out = list(values) if values is not None else [None] * n
    out[at] = bad
    return out


CASES = [
    (
        "missing required column",
        MissingColumnsError,
        "ra",
        lambda f: _bad(f, "dia_sources", ra=_DROP),
    ),
    (
        "missing object id",
        MissingColumnsError,
        "diaObjectId",
        lambda f: _bad(f, "dia_objects", diaObjectId=_DROP),
    ),
    (
        "NaN ra",
        InvalidCoordinatesError,
        "NaN",
        lambda f: _bad(
            f, "dia_sources", ra=np.where(np.arange(20) == 3, np.nan, f["dia_sources"].ra)
        ),
    ),
    (
        "dec out of range",
        InvalidCoordinatesError,
        "outside",
        lambda f: _bad(
            f, "dia_objects", dec=np.where(np.arange(20) == 4, 91.0, f["dia_objects"].dec)
        ),
    ),
    (
        "negative ra",
        InvalidCoordinatesError,
        "outside",
        lambda f: _bad(f, "dia_forced_sources", ra=np.full(20, -1.0)),
    ),
    (
        "duplicate source ids",
        DuplicateIdError,
        "203",
        lambda f: _bad(f, "dia_sources", diaSourceId=np.r_[f["dia_sources"].diaSourceId[:19], 203]),
    ),
    (
        "duplicate object ids",
        DuplicateIdError,
        "diaObjectId",
        lambda f: _bad(f, "dia_objects", diaObjectId=np.ones(20, dtype=np.int64)),
    ),
    (
        "wrong dtype: text in a float column",
        ColumnTypeError,
        "psfFlux",
        lambda f: _bad(f, "dia_sources", psfFlux=["bright"] * 20),
    ),
    (
        "wrong dtype: fractional ids",
        ColumnTypeError,
        "diaSourceId",
        lambda f: _bad(f, "dia_sources", diaSourceId=np.arange(20) + 0.5),
    ),
    (
        "wrong dtype: detector overflows smallint",
        ColumnTypeError,
        "detector",
        lambda f: _bad(f, "dia_sources", detector=np.full(20, 70000)),
    ),
    (
        "wrong dtype: bool in an integer column",
        ColumnTypeError,
        "bboxSize",
        lambda f: _bad(f, "dia_sources", bboxSize=np.ones(20, dtype=bool)),
    ),
    (
        "NULL in a NOT NULL column",
        NullValueError,
        "midpointMjdTai",
        lambda f: _bad(
            f, "dia_sources", midpointMjdTai=np.where(np.arange(20) == 2, np.nan, T1.mjd)
        ),
    ),
    (
        "unknown band",
        UnknownBandError,
        "'q'",
        lambda f: _bad(f, "dia_sources", band=["r"] * 19 + ["q"]),
    ),
    (
        "SQL in the band",
        UnknownBandError,
        "DROP TABLE",
        lambda f: _bad(f, "dia_sources", band=['r\'; DROP TABLE "DiaSource"; --'] * 20),
    ),
    (
        "SQL in a free-text column",
        SuspiciousStringError,
        "reliabilityVersion",
        lambda f: _bad(f, "dia_sources", reliabilityVersion=_col(None, bad="x';--")),
    ),
    (
        "string too long",
        ColumnTypeError,
        "reliabilityVersion",
        lambda f: _bad(f, "dia_sources", reliabilityVersion=_col(None, bad="much-too-long")),
    ),
    # -- sources of objects that exist nowhere ------------------------------------
    (
        "source of an unknown object",
        UnknownObjectError,
        r"DiaSource: diaObjectId not stored.*: 999",
        lambda f: _bad(f, "dia_sources", diaObjectId=np.r_[f["dia_sources"].diaObjectId[:19], 999]),
    ),
    (
        "forced source of an unknown object",
        UnknownObjectError,
        r"DiaForcedSource: .*: 998",
        lambda f: _bad(
            f,
            "dia_forced_sources",
            diaObjectId=np.r_[f["dia_forced_sources"].diaObjectId[:19], 998],
        ),
    ),
    (
        "sources of unknown objects, without objects in the call",
        UnknownObjectError,
        r"DiaSource: .*: 50, 51",
        lambda f: {
            **_bad(f, "dia_sources", diaObjectId=np.r_[f["dia_sources"].diaObjectId[:18], 50, 51]),
            "dia_objects": None,
        },
    ),
    # -- finite values that overflow their column type ----------------------------
    (
        "1e300 into a float32 column",
        ColumnTypeError,
        r"'psfFlux'.*out of range: 1e\+300\), expected float32",
        lambda f: _bad(
            f, "dia_forced_sources", psfFlux=_col(f["dia_forced_sources"].psfFlux, bad=1e300)
        ),
    ),
    (
        "-1e39 into a float32 column",
        ColumnTypeError,
        r"'raErr'.*out of range: -1e\+39",
        lambda f: _bad(f, "dia_objects", raErr=_col(f["dia_objects"].raErr, bad=-1e39)),
    ),
    (
        "int64 beyond an int32 column",
        ColumnTypeError,
        r"'bboxSize'.*out of range",
        lambda f: _bad(f, "dia_sources", bboxSize=np.full(20, 2**40, dtype=np.int64)),
    ),
    (
        "uint64 beyond a bigint column",
        ColumnTypeError,
        r"'diaSourceId'.*out of range",
        lambda f: _bad(
            f, "dia_sources", diaSourceId=np.arange(20, dtype=np.uint64) + np.uint64(2**63)
        ),
    ),
    (
        "Python int beyond a bigint column",
        ColumnTypeError,
        r"'visit'.*out of range",
        lambda f: _bad(f, "dia_forced_sources", visit=pd.Series([2] * 19 + [2**70], dtype=object)),
    ),
    # -- negative ids -------------------------------------------------------------
    (
        "negative diaSourceId",
        InvalidIdError,
        r"negative diaSourceId: -5",
        lambda f: _bad(f, "dia_sources", diaSourceId=_col(f["dia_sources"].diaSourceId, bad=-5)),
    ),
    (
        "negative diaObjectId",
        InvalidIdError,
        r"DiaObject: negative diaObjectId: -7",
        lambda f: _bad(f, "dia_objects", diaObjectId=_col(f["dia_objects"].diaObjectId, bad=-7)),
    ),
    (
        "negative visit",
        InvalidIdError,
        r"negative visit",
        lambda f: _bad(f, "dia_forced_sources", visit=np.full(20, -2)),
    ),
    (
        "negative detector",
        InvalidIdError,
        r"negative detector",
        lambda f: _bad(f, "dia_sources", detector=np.full(20, -1)),
    ),
    # -- midpoints far from the visit time ------------------------------------------
    (
        "midpoint 1.5 days after the visit",
        InvalidTimeError,
        r"DiaSource: midpointMjdTai up to 1\.5 day.*limit 1 day.*diaSourceId \[205\]",
        lambda f: _bad(
            f, "dia_sources", midpointMjdTai=_col([T1.mjd] * 20, at=4, bad=T1.mjd + 1.5)
        ),
    ),
    (
        "forced midpoints of another night",
        InvalidTimeError,
        r"DiaForcedSource: midpointMjdTai up to 2 day",
        lambda f: _bad(f, "dia_forced_sources", midpointMjdTai=np.full(20, T1.mjd - 2.0)),
    ),
]


@pytest.mark.parametrize(("label", "error", "message", "make"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_nothing_written(seeded, label, error, message, make):
    apdb, frames = seeded
    before = _snapshot(apdb)
    with pytest.raises(error, match=message) as info:
        apdb.store(T1, **make(frames))
    assert isinstance(info.value, ApdbInputError)
    _assert_unchanged(apdb, before)
    # The good frames still go in afterwards.
    apdb.store(T1, **frames)
    assert apdb.contains_visit_detector(2, 1)


def test_sources_may_refer_to_stored_objects_or_to_none(seeded):
    """The reference check accepts what is valid: stored objects, this call's, NULL."""
    apdb, frames = seeded
    sources = frames["dia_sources"].copy()
    # Objects 1..20 are stored (visit 1); the sources of 1..10 come without objects.
    objects = frames["dia_objects"].iloc[10:]
    sources["diaObjectId"] = sources["diaObjectId"].astype("Int64")
    sources.loc[0, "diaObjectId"] = pd.NA  # e.g. a Solar System object's source
    apdb.store(T1, objects, sources, frames["dia_forced_sources"])
    got = apdb.get_dia_sources(Time(60010.0, format="mjd", scale="tai"), object_ids=[2, 15])
    assert sorted(got["diaSourceId"]) == [102, 115, 202, 215]
    assert apdb.row_counts()["DiaSource"] == 40


def test_midpoint_limit_is_configurable(apdb_url):
    """Within the limit is stored; beyond a smaller configured limit is refused."""
    rng = np.random.default_rng(5)
    ids = np.arange(1, 6, dtype=np.int64)
    ra, dec = random_positions(5, RA, DEC, 0.05, rng)
    sources = make_dia_sources(ids + 100, ids, ra, dec, 1, 1, T0.mjd + 0.9, rng)
    with Apdb.from_url(apdb_url) as db:
        db.store(T0, make_dia_objects(ids, ra, dec, rng), sources)
        assert db.row_counts()["DiaSource"] == 5
    late = make_dia_sources(ids + 200, ids, ra, dec, 2, 1, T1.mjd + 0.2, rng)
    with Apdb.from_url(apdb_url, max_midpoint_offset_days=0.1) as db:
        with pytest.raises(InvalidTimeError, match=r"limit 0\.1 day"):
            db.store(T1, None, late)
        assert db.row_counts()["DiaSource"] == 5
        assert not db.contains_visit_detector(2, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"months": -1}, "-1 months is negative"),
        ({"months": 1.5}, "must be an integer"),
        ({"months": "12"}, "must be an integer"),
    ],
)
def test_bad_history_windows_are_refused(seeded, kwargs, message):
    apdb, _ = seeded
    for read in (apdb.get_dia_sources, apdb.get_dia_forced_sources):
        with pytest.raises(InvalidTimeError, match=message):
            read(T1, **kwargs)
    # A zero-length window is valid and empty.
    assert len(apdb.get_dia_sources(T1, months=0)) == 0
    assert len(apdb.get_dia_sources(T1, months=1)) == 20


def test_window_start_after_the_visit_is_refused(seeded):
    apdb, _ = seeded
    if "start_time" not in inspect.signature(apdb.get_dia_sources).parameters:
        pytest.fail("get_dia_sources has no start_time parameter (issue 12, section 3)")
    for read in (apdb.get_dia_sources, apdb.get_dia_forced_sources):
        with pytest.raises(InvalidTimeError, match="is after visit_time"):
            read(T0, start_time=T1)
        assert len(read(T1, start_time=T0)) == 20


def test_negative_object_ids_in_reads_are_refused(seeded):
    apdb, _ = seeded
    with pytest.raises(InvalidIdError, match="negative object_ids: -3"):
        apdb.get_dia_sources(T1, object_ids=[1, -3])
    with pytest.raises(InvalidIdError):
        apdb.get_dia_forced_sources(T1, object_ids=np.array([-1]))


def test_ids_already_stored_are_named(seeded):
    apdb, frames = seeded
    before = _snapshot(apdb)
    # Forced sources reuse ids of visit 1 under a new visit number.
    bad = _bad(frames, "dia_sources", diaSourceId=np.arange(101, 121))
    with pytest.raises(AlreadyStoredError, match="101") as info:
        apdb.store(T1, **bad)
    assert info.value.ids[:3] == [101, 102, 103]
    _assert_unchanged(apdb, before)


def test_restored_visit_is_refused(seeded):
    apdb, frames = seeded
    apdb.store(T1, **frames)
    before = _snapshot(apdb)
    with pytest.raises(AlreadyStoredError, match=r"visit/detector \(2, 1\)"):
        apdb.store(T1, **frames)
    counts, objects, n_sources = _snapshot(apdb)
    assert counts == before[0]
    assert n_sources == before[2]


def test_not_a_dataframe_and_bad_time(seeded):
    apdb, frames = seeded
    with pytest.raises(ColumnTypeError):
        apdb.store(T1, frames["dia_objects"].to_dict())
    with pytest.raises(ColumnTypeError, match="visit_time"):
        apdb.store(60001.0, **frames)
    with pytest.raises(ColumnTypeError, match="object_ids"):
        apdb.get_dia_sources(T1, object_ids=["1; DROP TABLE x"])


@pytest.mark.parametrize(
    ("frame", "key"), [("dia_sources", "diaSourceId"), ("dia_forced_sources", "diaForcedSourceId")]
)
def test_ids_reused_in_another_partition_are_refused(seeded, frame, key):
    """On Citus the keys include partitionId: an id stored far away must still be refused."""
    apdb, frames = seeded
    before = _snapshot(apdb)
    rng = np.random.default_rng(12)
    ids = np.arange(501, 521, dtype=np.int64)
    # 90 degrees away from visit 1's field: other partitions (and shards).
    ra, dec = random_positions(20, RA + 90.0, DEC, 0.05, rng)
    reused = ids - 400  # 101..120: visit 1's ids
    new = ids + 1000
    far = {
        "dia_objects": make_dia_objects(ids, ra, dec, rng),
        "dia_sources": make_dia_sources(
            reused if frame == "dia_sources" else new, ids, ra, dec, 2, 1, T1.mjd, rng
        ),
        "dia_forced_sources": make_dia_forced_sources(
            reused if frame == "dia_forced_sources" else new, ids, ra, dec, 2, 1, T1.mjd, rng
        ),
    }
    with pytest.raises(AlreadyStoredError, match="101") as info:
        apdb.store(T1, **far)
    assert info.value.column == key
    assert info.value.ids == list(range(101, 121))
    _assert_unchanged(apdb, before)
    assert len(apdb.get_dia_objects(Cone(RA + 90.0, DEC, 1.0))) == 0
