"""Seeded sky of overlapping detector fields, and one detector-visit cycle.

Geometry: a grid of ``cols x rows`` cells (one per detector): square
footprints of side ``spacing_deg`` (0.283°) that tile the sky, each read as
its circumscribed cone of ``radius_deg`` (0.2°) padded by ``margin_arcsec``
(20").  A detector detects sources in its square widened by ``edge_arcsec``
(20"): objects on a shared edge are detected, associated and updated by both
neighbouring detectors of the same visit.  Each visit shifts the
whole grid by a seeded dither of up to ``dither_deg``, so a cell of visit v
and the same cell of visit v+1 cover almost the same objects: workers running
cycles of consecutive visits at the same time update shared objects in either
order (late stores).

Truth: a static population of objects (uniform, ``density`` per deg²) with
exact positions.  A cycle detects each static object inside its footprint
with probability ``detect_fraction`` plus a few new transients; the
detections are associated with the DiaObjects the cycle *read* (a DiaObject
is stored at its true position, so it is matched by exact ``ra``): matched
objects get a new version with ``nDiaSources`` = read value + 1, unmatched
detections seed new DiaObjects (id = the seeding diaSourceId).  Forced
sources: every read DiaObject inside the footprint plus the new ones.  Every
column of Rubin's ``apdb.yaml`` is filled (bench.apdb_cycle's filler), so
rows are as wide as in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.apdb_cycle.workload import fill_frame, load_column_spec
from tasks.core.ids import make_ids

__all__ = ["Cycle", "FieldConfig", "Sky"]


@dataclass
class FieldConfig:
    """Parameters of the sky and of the cycles."""

    cols: int = 8
    rows: int = 4
    spacing_deg: float = 0.283
    radius_deg: float = 0.2
    margin_arcsec: float = 20.0
    edge_arcsec: float = 20.0
    dither_deg: float = 0.03
    ra0: float = 150.0
    dec0: float = 2.0
    density: float = 2400.0  # static objects per deg²: ~300 per cone
    detect_fraction: float = 0.5  # ~100 detections of static objects per cycle
    transients: float = 10.0  # mean new objects per cycle (Poisson)
    history_visits: int = 8
    measured_visits: int = 3
    first_mjd: float = 60_500.1
    cadence_days: float = 0.5
    first_visit: int = 5000
    seed: int = 20261207

    @property
    def n_cells(self) -> int:
        """Detectors (cells) per visit."""
        return self.cols * self.rows


@dataclass
class Cycle:
    """One detector-visit: which cell, which visit."""

    visit_index: int
    cell: int

    def visit(self, config: FieldConfig) -> int:
        """Visit number."""
        return config.first_visit + self.visit_index

    def mjd(self, config: FieldConfig) -> float:
        """Visit time (MJD TAI)."""
        return config.first_mjd + self.visit_index * config.cadence_days


class Sky:
    """The static truth and the per-cycle data (deterministic from the seed)."""

    def __init__(self, config: FieldConfig):
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        half_w = (c.cols - 1) * c.spacing_deg / 2 + c.radius_deg + 2 * c.dither_deg
        half_h = (c.rows - 1) * c.spacing_deg / 2 + c.radius_deg + 2 * c.dither_deg
        cosd = np.cos(np.radians(c.dec0))
        n = int(rng.poisson(c.density * (2 * half_w) * (2 * half_h)))
        self.dec = c.dec0 + rng.uniform(-half_h, half_h, n)
        self.ra = c.ra0 + rng.uniform(-half_w, half_w, n) / cosd
        order = np.argsort(self.ra)
        self.ra, self.dec = self.ra[order], self.dec[order]
        self.spec = load_column_spec()

    # -- geometry -----------------------------------------------------------------
    def centre(self, cycle: Cycle) -> tuple[float, float]:
        """Centre of the cycle's cone (grid position + the visit's dither)."""
        c = self.config
        rng = np.random.default_rng([c.seed, 1, cycle.visit_index])
        dra, ddec = rng.uniform(-c.dither_deg, c.dither_deg, 2)
        col, row = cycle.cell % c.cols, cycle.cell // c.cols
        dec = c.dec0 + (row - (c.rows - 1) / 2) * c.spacing_deg + ddec
        ra = c.ra0 + ((col - (c.cols - 1) / 2) * c.spacing_deg + dra) / np.cos(np.radians(c.dec0))
        return float(ra), float(dec)

    def read_radius(self) -> float:
        """Radius of the reads: the cone padded by the margin (degrees)."""
        return self.config.radius_deg + self.config.margin_arcsec / 3600.0

    def in_footprint(self, ra: np.ndarray, dec: np.ndarray, cycle: Cycle) -> np.ndarray:
        """Mask of positions in the cycle's square widened by the edge band."""
        ra0, dec0 = self.centre(cycle)
        half = self.config.spacing_deg / 2 + self.config.edge_arcsec / 3600.0
        dx = ((ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec0))
        return (np.abs(dx) <= half) & (np.abs(dec - dec0) <= half)

    # -- one cycle --------------------------------------------------------------------
    def cycle_frames(
        self, cycle: Cycle, read_objects: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """DiaObjects, DiaSources, DiaForcedSources the cycle stores.

        Parameters
        ----------
        cycle : `Cycle`
            The detector-visit.
        read_objects : `pandas.DataFrame`
            DiaObjects the cycle read (``diaObjectId``, ``ra``, ``dec``,
            ``nDiaSources`` at least).
        """
        c = self.config
        rng = np.random.default_rng([c.seed, 2, cycle.visit_index, cycle.cell])
        visit, mjd = cycle.visit(c), cycle.mjd(c)
        in_square = np.flatnonzero(self.in_footprint(self.ra, self.dec, cycle))
        detected = in_square[rng.random(in_square.size) < c.detect_fraction]
        n_tr = int(rng.poisson(c.transients))
        tr_ra, tr_dec = self._random_in_square(cycle, n_tr, rng)

        # Associate: a read DiaObject sits at its true position (exact ra).
        r_ids = read_objects["diaObjectId"].to_numpy(np.int64)
        r_ra = read_objects["ra"].to_numpy(np.float64)
        r_n = read_objects["nDiaSources"].to_numpy(np.int64)
        pos = np.clip(np.searchsorted(self.ra, r_ra), 0, max(self.ra.size - 1, 0))
        matched = self.ra[pos] == r_ra if self.ra.size else np.zeros(0, bool)
        known_id = np.full(self.ra.size, -1, np.int64)
        known_n = np.zeros(self.ra.size, np.int64)
        # Several DiaObjects of one true object (seeded concurrently): the smallest id.
        order = np.lexsort((-r_ids, pos))  # per static object, the smallest id last
        sel = order[matched[order]]
        known_id[pos[sel]] = r_ids[sel]
        known_n[pos[sel]] = r_n[sel]

        n_src = detected.size + n_tr
        source_ids = make_ids(visit, cycle.cell, n_src)
        obj_ids = np.concatenate([known_id[detected], source_ids[detected.size :]])
        is_new = obj_ids < 0
        obj_ids[is_new] = source_ids[is_new]
        n_det = np.concatenate([known_n[detected], np.zeros(n_tr, np.int64)]) + 1
        ra = np.concatenate([self.ra[detected], tr_ra])
        dec = np.concatenate([self.dec[detected], tr_dec])

        objects = self._frame(
            "DiaObject",
            {
                "diaObjectId": obj_ids,
                "ra": ra,
                "dec": dec,
                "nDiaSources": n_det,
                "firstDiaSourceMjdTai": np.full(n_src, mjd),
                "lastDiaSourceMjdTai": np.full(n_src, mjd),
            },
            n_src,
            rng,
        )
        band = "griz"[cycle.visit_index % 4]
        sources = self._frame(
            "DiaSource",
            {
                "diaSourceId": source_ids,
                "visit": np.full(n_src, visit),
                "detector": np.full(n_src, cycle.cell),
                "diaObjectId": obj_ids,
                "midpointMjdTai": np.full(n_src, mjd),
                "ra": ra,
                "dec": dec,
                "band": np.full(n_src, band, dtype=object),
                "psfNdata": np.full(n_src, 441),
                "timeProcessedMjdTai": np.full(n_src, mjd + 0.0005),
                "reliabilityVersion": np.full(n_src, "v1", dtype=object),
            },
            n_src,
            rng,
        )
        # Forced photometry: the read objects in the footprint, plus the new ones.
        inside = self.in_footprint(r_ra, read_objects["dec"].to_numpy(np.float64), cycle)
        f_ids = np.concatenate([r_ids[inside], obj_ids[is_new]])
        f_ra = np.concatenate([r_ra[inside], ra[is_new]])
        f_dec = np.concatenate([read_objects["dec"].to_numpy(np.float64)[inside], dec[is_new]])
        nf = f_ids.size
        forced = self._frame(
            "DiaForcedSource",
            {
                "diaForcedSourceId": make_ids(visit, cycle.cell, nf, start=n_src),
                "diaObjectId": f_ids,
                "ra": f_ra,
                "dec": f_dec,
                "visit": np.full(nf, visit),
                "detector": np.full(nf, cycle.cell),
                "midpointMjdTai": np.full(nf, mjd),
                "band": np.full(nf, band, dtype=object),
                "timeProcessedMjdTai": np.full(nf, mjd + 0.0005),
                "timeWithdrawnMjdTai": np.full(nf, np.nan),
            },
            nf,
            rng,
        )
        return objects, sources, forced

    def _random_in_square(
        self, cycle: Cycle, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        ra0, dec0 = self.centre(cycle)
        half = self.config.spacing_deg / 2
        dec = dec0 + rng.uniform(-half, half, n)
        ra = ra0 + rng.uniform(-half, half, n) / np.cos(np.radians(dec0))
        return ra, dec

    def _frame(self, table: str, core: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return fill_frame(self.spec, table, core, n, rng)
