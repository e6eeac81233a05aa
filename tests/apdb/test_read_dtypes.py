"""Every read method returns the same columns and dtypes on an empty and a filled APDB."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb.sky import Cone
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

RA, DEC = 80.0, -5.0
T0 = Time(60300.0, format="mjd", scale="tai")
T_READ = Time(60301.0, format="mjd", scale="tai")
IDS = np.arange(1, 11, dtype=np.int64)

READS = {
    "get_dia_objects": lambda db: db.get_dia_objects(Cone(RA, DEC, 0.3)),
    "get_dia_sources(region)": lambda db: db.get_dia_sources(T_READ, region=Cone(RA, DEC, 0.3)),
    "get_dia_sources(ids)": lambda db: db.get_dia_sources(T_READ, object_ids=IDS),
    "get_dia_forced_sources": lambda db: db.get_dia_forced_sources(T_READ, object_ids=IDS),
    "get_ss_objects": lambda db: db.get_ss_objects(),
    "get_light_curve": lambda db: db.get_light_curve(3),
    "get_busiest_dia_objects": lambda db: db.get_busiest_dia_objects(3),
    "get_dia_objects_for_dedup": lambda db: db.get_dia_objects_for_dedup(),
    "get_dia_sources_for_dia_objects": lambda db: db.get_dia_sources_for_dia_objects(IDS, T0),
}


def _fill(db) -> None:
    rng = np.random.default_rng(21)
    ra, dec = random_positions(len(IDS), RA, DEC, 0.05, rng)
    objects = make_dia_objects(IDS, ra, dec, rng)
    objects.loc[0, "raErr"] = np.nan  # NULLs in nullable columns of each kind
    sources = make_dia_sources(IDS + 100, IDS, ra, dec, 1, 3, T0.mjd, rng)
    sources["parentDiaSourceId"] = pd.array([None] + [7] * (len(IDS) - 1), dtype="Int64")
    sources["band"] = ["g"] * (len(IDS) - 1) + [None]
    db.store(
        T0, objects, sources, make_dia_forced_sources(IDS + 100, IDS, ra, dec, 1, 3, T0.mjd, rng)
    )
    db.store_ss_objects(pd.DataFrame({"ssObjectId": [5, 6], "designation": ["2026 AA", None]}))


@pytest.mark.parametrize("name", list(READS))
def test_empty_and_filled_reads_have_the_same_dtypes(apdb, name):
    read = READS[name]
    empty = read(apdb)
    assert len(empty) == 0
    _fill(apdb)
    filled = read(apdb)
    assert len(filled) > 0
    assert list(filled.columns) == list(empty.columns)
    different = {
        c: (str(empty[c].dtype), str(filled[c].dtype))
        for c in empty.columns
        if empty[c].dtype != filled[c].dtype
    }
    assert different == {}, f"{name}: (empty, filled) dtypes differ: {different}"
