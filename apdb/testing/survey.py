"""A small synthetic survey stored visit by visit (replication tests and benchmarks).

`store_survey` stores ``n_visits`` visits of the same ``n_objects`` DiaObjects
(one detector per visit, bands cycling through ``BANDS``): each visit stores
a new version of every object, one DiaSource and one DiaForcedSource per
object, with ids that encode (visit, object index), so the truth of every
row is known: DiaSource ``visit * 10**6 + k`` belongs to object
``first_object_id + k``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.time import Time

from apdb.apdb import Apdb
from apdb.schema import BANDS
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

__all__ = ["SurveyPlan", "store_survey", "visit_frames"]

ID_STRIDE = 10**6


class SurveyPlan:
    """Positions and ids of a synthetic survey.

    Parameters
    ----------
    n_objects : `int`
        DiaObjects (ids ``first_object_id ... + n_objects - 1``).
    ra, dec, radius : `float`
        Cone the objects are spread in (degrees).
    seed : `int`
        Random seed.
    start_mjd : `float`
        MJD TAI of visit 1; visit ``v`` is one hour later than ``v - 1``.
    first_object_id : `int`
        First DiaObject id.
    """

    def __init__(
        self,
        n_objects: int,
        ra: float = 45.0,
        dec: float = -30.0,
        radius: float = 0.5,
        seed: int = 1,
        start_mjd: float = 60500.0,
        first_object_id: int = 1,
    ):
        self.n_objects = int(n_objects)
        self.rng = np.random.default_rng(seed)
        self.ra, self.dec = random_positions(self.n_objects, ra, dec, radius, self.rng)
        self.object_ids = np.arange(
            first_object_id, first_object_id + self.n_objects, dtype=np.int64
        )
        self.start_mjd = float(start_mjd)

    def visit_time(self, visit: int) -> Time:
        """Time of a visit (TAI)."""
        return Time(self.start_mjd + (visit - 1) / 24.0, format="mjd", scale="tai")


def visit_frames(
    plan: SurveyPlan, visit: int
) -> tuple[Time, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(visit_time, objects, sources, forced_sources)`` of one visit."""
    t = plan.visit_time(visit)
    mjd = float(t.tai.mjd)
    band = BANDS[(visit - 1) % len(BANDS)]
    objects = make_dia_objects(plan.object_ids, plan.ra, plan.dec, plan.rng, n_sources=visit)
    objects["lastDiaSourceMjdTai"] = mjd
    ids = visit * ID_STRIDE + np.arange(plan.n_objects, dtype=np.int64)
    args = (plan.object_ids, plan.ra, plan.dec, visit, 1, mjd, plan.rng)
    sources = make_dia_sources(ids, *args, band=band)
    forced = make_dia_forced_sources(ids, *args, band=band)
    return t, objects, sources, forced


def store_survey(apdb: Apdb, plan: SurveyPlan, visits: range | list[int]) -> int:
    """Store the given visits of ``plan``; return the number of rows stored."""
    n = 0
    for visit in visits:
        t, objects, sources, forced = visit_frames(plan, visit)
        apdb.store(t, objects, sources, forced)
        n += len(objects) + len(sources) + len(forced)
    return n
