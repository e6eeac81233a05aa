"""Seeded sky of ``n_fields`` detector-sized fields observed round after round.

Field ``f`` is a cone of ``radius_deg`` around a grid position spread over
the whole sky (so the tables hold many sky regions, not one hot spot).  Each
field has a static population of ``per_field`` DiaObjects, seeded in round 0
(object id = the seeding diaSourceId, so ids grow with the fill).  In every
round each field is visited once: a seeded fraction ``detect_fraction`` of
its objects is detected (one DiaSource each, a new DiaObject version with
``nDiaSources`` + 1); fields below ``forced_fields`` also get a forced source
for every object.  Rounds are ``round_days`` apart, so a 12-month history
window before a visit holds the same number of rounds (two by default)
whatever the depth of the fill: a read at 10 M rows returns as many rows as
at 1 M, and only the size of the tables differs.

Every column of Rubin's ``apdb.yaml`` is filled (bench.apdb_cycle's filler),
so rows are as wide as in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.apdb_cycle.workload import fill_frame, load_column_spec
from tasks.core.ids import MAX_DETECTORS, make_ids

__all__ = ["ScaleConfig", "ScaleSky", "VisitRows"]


@dataclass
class ScaleConfig:
    """Parameters of the fill."""

    n_fields: int = 200
    per_field: int = 2000
    detect_fraction: float = 0.9
    forced_fields: int = 20
    radius_deg: float = 0.2
    margin_arcsec: float = 20.0
    round_days: float = 150.0
    first_mjd: float = 60_000.1
    first_visit: int = 10_000
    seed: int = 20261207

    @property
    def sources_per_round(self) -> int:
        """DiaSources stored by one round over every field."""
        return self.n_fields * int(round(self.per_field * self.detect_fraction))


@dataclass
class VisitRows:
    """What one (round, field) store writes."""

    round: int
    field: int
    visit: int
    detector: int
    mjd: float
    objects: pd.DataFrame
    sources: pd.DataFrame
    forced: pd.DataFrame


class ScaleSky:
    """Field positions, object truth and per-visit frames (deterministic from the seed)."""

    def __init__(self, config: ScaleConfig):
        self.config = c = config
        self.spec = load_column_spec()
        # Fields on a coarse grid over the sky (|dec| <= 60, 18 deg apart in ra).
        per_row = 20
        f = np.arange(c.n_fields)
        self.ra0 = (f % per_row) * (360.0 / per_row) + 3.0 * (f // per_row)
        self.dec0 = -60.0 + (f // per_row) * (120.0 / max((c.n_fields - 1) // per_row, 1))
        rng = np.random.default_rng(c.seed)
        n = c.per_field
        self.obj_ra = np.empty((c.n_fields, n))
        self.obj_dec = np.empty((c.n_fields, n))
        for i in range(c.n_fields):
            self.obj_ra[i], self.obj_dec[i] = _random_in_cone(
                rng, n, self.ra0[i], self.dec0[i], c.radius_deg
            )
        self.obj_ids = np.zeros((c.n_fields, n), np.int64)  # set in round 0
        self.n_det = np.zeros((c.n_fields, n), np.int64)

    def visit_of(self, rnd: int, field: int) -> tuple[int, int, float]:
        """Visit number, detector and MJD of field ``field`` in round ``rnd``."""
        c = self.config
        visit = c.first_visit + rnd * c.n_fields + field
        mjd = c.first_mjd + rnd * c.round_days + field * (0.5 / c.n_fields)
        return visit, field % MAX_DETECTORS, mjd

    def rows(self, rnd: int, field: int) -> VisitRows:
        """Frames of the store of field ``field`` in round ``rnd`` (updates the truth)."""
        c = self.config
        rng = np.random.default_rng([c.seed, rnd, field])
        visit, detector, mjd = self.visit_of(rnd, field)
        n_obj = c.per_field
        if rnd == 0:
            idx = np.arange(n_obj)
        else:
            k = int(round(n_obj * c.detect_fraction))
            idx = np.sort(rng.choice(n_obj, k, replace=False))
        n = idx.size
        source_ids = make_ids(visit, detector, n)
        if rnd == 0:
            self.obj_ids[field] = source_ids
        ids = self.obj_ids[field, idx]
        self.n_det[field, idx] += 1
        pos_err = 0.05 / 3600.0
        ra = (self.obj_ra[field, idx] + rng.normal(0, pos_err, n)) % 360.0
        dec = self.obj_dec[field, idx] + rng.normal(0, pos_err, n)
        band = "griz"[rnd % 4]
        objects = self._frame(
            "DiaObject",
            {
                "diaObjectId": ids,
                "ra": self.obj_ra[field, idx],
                "dec": self.obj_dec[field, idx],
                "nDiaSources": self.n_det[field, idx],
                "firstDiaSourceMjdTai": np.full(n, c.first_mjd + field * (0.5 / c.n_fields)),
                "lastDiaSourceMjdTai": np.full(n, mjd),
            },
            n,
            rng,
        )
        sources = self._frame(
            "DiaSource",
            {
                "diaSourceId": source_ids,
                "visit": np.full(n, visit),
                "detector": np.full(n, detector),
                "diaObjectId": ids,
                "midpointMjdTai": np.full(n, mjd),
                "ra": ra,
                "dec": dec,
                "band": np.full(n, band, dtype=object),
                "psfNdata": np.full(n, 441),
                "timeProcessedMjdTai": np.full(n, mjd + 0.0005),
                "reliabilityVersion": np.full(n, "v1", dtype=object),
            },
            n,
            rng,
        )
        if field < c.forced_fields:
            all_ids = self.obj_ids[field]
            forced = self._frame(
                "DiaForcedSource",
                {
                    "diaForcedSourceId": make_ids(visit, detector, n_obj, start=n),
                    "diaObjectId": all_ids,
                    "ra": self.obj_ra[field],
                    "dec": self.obj_dec[field],
                    "visit": np.full(n_obj, visit),
                    "detector": np.full(n_obj, detector),
                    "midpointMjdTai": np.full(n_obj, mjd),
                    "band": np.full(n_obj, band, dtype=object),
                    "timeProcessedMjdTai": np.full(n_obj, mjd + 0.0005),
                    "timeWithdrawnMjdTai": np.full(n_obj, np.nan),
                },
                n_obj,
                rng,
            )
        else:
            forced = self._frame("DiaForcedSource", {}, 0, rng)
        return VisitRows(rnd, field, visit, detector, mjd, objects, sources, forced)

    def _frame(self, table: str, core: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return fill_frame(self.spec, table, core, n, rng)


def _random_in_cone(
    rng: np.random.Generator, n: int, ra0: float, dec0: float, radius_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions on the spherical cap of ``radius_deg`` around (ra0, dec0)."""
    cos_r = np.cos(np.radians(radius_deg))
    z = rng.uniform(cos_r, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - z**2)
    v = np.stack([z, s * np.cos(phi), s * np.sin(phi)])
    a, d = np.radians(ra0), np.radians(dec0)
    rot_y = np.array([[np.cos(d), 0, -np.sin(d)], [0, 1, 0], [np.sin(d), 0, np.cos(d)]])
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    x, y, zz = rot_z @ rot_y @ v
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(zz, -1, 1)))
