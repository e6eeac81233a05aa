"""Seeded deep-field workload for the APDB cycle benchmark.

One detector-sized field (a cone of radius ``radius_deg`` around
``(ra0, dec0)``, 0.196 deg² for the default 0.25°) is observed ``V`` times.
Visit 1 detects ``n_sources`` new objects; every later visit detects
``n_sources`` DiaSources of which a fraction ``match_fraction`` belong to
existing DiaObjects (chosen at random, one source per object) and the rest
seed new DiaObjects.  Every DiaObject of the field gets one forced source per
visit.  The generator keeps the truth in memory (object positions, running
per-band statistics), so it knows how many rows each read must return and it
computes the updated DiaObjects itself, identically for every implementation.

Column names and types come from Rubin's ``apdb.yaml`` (PyPI
``lsst-sdm-schemas``), the schema both implementations follow; every column
of ``DiaSource``/``DiaForcedSource``/``DiaObject`` is filled (implementation
columns such as ``validityStartMjdTai`` are left to the database), so rows are
as wide as in production.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml

from tasks.core.ids import make_ids

BANDS = "ugrizy"
DETECTOR = 42
# Columns an implementation fills itself (versioning, spatial index).
MANAGED_COLUMNS = frozenset({"validityStartMjdTai", "validityEndMjdTai", "pixelId"})

_KIND_OF_FELIS = {
    "double": "f8",
    "float": "f4",
    "long": "i8",
    "int": "i4",
    "short": "i2",
    "boolean": "bool",
    "char": "str",
    "string": "str",
    "text": "str",
}


def load_column_spec(tables: tuple[str, ...] = ("DiaObject", "DiaSource", "DiaForcedSource")):
    """Read column names, kinds and nullability from Rubin's ``apdb.yaml``.

    Returns
    -------
    spec : `dict` [`str`, `list` [`tuple` [`str`, `str`, `bool`]]]
        Per table, ``(name, kind, nullable)`` with kind one of
        ``f8 f4 i8 i4 i2 bool str``.
    """
    text = (importlib.resources.files("lsst.sdm.schemas") / "apdb.yaml").read_text()
    doc = yaml.safe_load(text)
    spec = {}
    for table in doc["tables"]:
        if table["name"] in tables:
            spec[table["name"]] = [
                (c["name"], _KIND_OF_FELIS[c["datatype"]], bool(c.get("nullable", True)))
                for c in table["columns"]
                if c["name"] not in MANAGED_COLUMNS
            ]
    return spec


@dataclass
class WorkloadConfig:
    """Parameters of the deep-field workload."""

    visits: int = 15
    n_sources: int = 10_000
    match_fraction: float = 0.95
    ra0: float = 150.0
    dec0: float = 2.0
    radius_deg: float = 0.25
    margin_arcsec: float = 20.0
    first_mjd: float = 60_500.1
    cadence_days: float = 1.0
    seed: int = 20261121
    first_visit: int = 1000

    @property
    def area_deg2(self) -> float:
        """Area of the field (cone) in square degrees."""
        r = np.radians(self.radius_deg)
        return float(2 * np.pi * (1 - np.cos(r)) * (180 / np.pi) ** 2)


@dataclass
class VisitData:
    """Everything one visit stores, plus the truth its reads must return."""

    index: int
    visit: int
    band: str
    mjd: float
    dia_objects: pd.DataFrame
    dia_sources: pd.DataFrame
    dia_forced_sources: pd.DataFrame
    expected_objects: int
    expected_source_history: int
    expected_forced_history: int
    compute_s: float = 0.0
    extra: dict = field(default_factory=dict)


class _Stats:
    """Running per-object statistics (struct of arrays, grown on demand)."""

    def __init__(self, capacity: int):
        self.n = 0
        z = np.zeros
        self.ids = z(capacity, np.int64)
        self.true_ra = z(capacity)
        self.true_dec = z(capacity)
        self.amp = z(capacity)
        self.nsrc = z(capacity, np.int64)
        self.sum_ra = z(capacity)
        self.sum_dec = z(capacity)
        self.first = np.full(capacity, np.nan)
        self.last = np.full(capacity, np.nan)
        shape = (len(BANDS), capacity)
        self.nd = np.zeros(shape, np.int64)
        self.sf = np.zeros(shape)
        self.sf2 = np.zeros(shape)
        self.siv = np.zeros(shape)
        self.serr = np.zeros(shape)
        self.fmin = np.full(shape, np.nan)
        self.fmax = np.full(shape, np.nan)
        self.slope = np.full(shape, np.nan)
        self.last_f = np.full(shape, np.nan)
        self.last_t = np.full(shape, np.nan)
        self.sci_sf = np.zeros(shape)
        self.sci_siv = np.zeros(shape)
        self.fp_sf = np.zeros(shape)
        self.fp_siv = np.zeros(shape)


def _nan_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a / b
    out[b == 0] = np.nan
    return out


class DeepFieldWorkload:
    """Generate the visits of the deep field one at a time (seeded).

    Parameters
    ----------
    config : `WorkloadConfig`
        Workload parameters.
    spec : `dict`, optional
        Column spec from `load_column_spec` (read when not given).
    """

    def __init__(self, config: WorkloadConfig, spec: dict | None = None):
        self.config = config
        self.spec = spec or load_column_spec()
        capacity = config.n_sources * (1 + config.visits)
        self.state = _Stats(capacity)
        self._history_sources = 0
        self._history_forced = 0
        self._visit_index = 0

    # -- geometry ---------------------------------------------------------------
    def _random_in_cone(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        # Uniform on the spherical cap, then rotated to (ra0, dec0).
        cos_r = np.cos(np.radians(c.radius_deg))
        z = rng.uniform(cos_r, 1.0, n)
        phi = rng.uniform(0, 2 * np.pi, n)
        s = np.sqrt(1 - z**2)
        v = np.stack([z, s * np.cos(phi), s * np.sin(phi)])  # around +x
        a, d = np.radians(c.ra0), np.radians(c.dec0)
        rot_y = np.array([[np.cos(d), 0, -np.sin(d)], [0, 1, 0], [np.sin(d), 0, np.cos(d)]])
        rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        x, y, zz = rot_z @ rot_y @ v
        ra = np.degrees(np.arctan2(y, x)) % 360.0
        dec = np.degrees(np.arcsin(np.clip(zz, -1, 1)))
        return ra, dec

    def _pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        scale = 0.2 / 3600.0  # deg per pixel
        x = (ra - c.ra0) * np.cos(np.radians(c.dec0)) / scale + 2048.0
        y = (dec - c.dec0) / scale + 2048.0
        return x, y

    # -- filler columns -----------------------------------------------------------
    @staticmethod
    def _fill(rng: np.random.Generator, kind: str, nullable: bool, n: int, name: str):
        if kind in ("f8", "f4"):
            if name.startswith(("trail", "timeWithdrawn", "ssObjectReassoc")):
                return np.full(n, np.nan, dtype=kind)
            return rng.normal(0.0, 1.0, n).astype(kind)
        if kind == "bool":
            return rng.random(n) < 0.02
        if kind in ("i8", "i4", "i2"):
            if nullable and name in ("ssObjectId", "parentDiaSourceId"):
                return pd.array([pd.NA] * n, dtype="Int64")
            return rng.integers(0, 5, n).astype(kind)
        return np.full(n, "v1", dtype=object)

    def _frame(self, table: str, core: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return fill_frame(self.spec, table, core, n, rng)

    # -- the visits ---------------------------------------------------------------
    def __iter__(self):
        for _ in range(self.config.visits):
            yield self.next_visit()

    def next_visit(self) -> VisitData:
        """Generate the next visit and update the truth."""
        import time

        c, st = self.config, self.state
        i = self._visit_index
        self._visit_index += 1
        visit = c.first_visit + i
        band = "griz"[i % 4]
        b = BANDS.index(band)
        mjd = c.first_mjd + i * c.cadence_days
        rng = np.random.default_rng([c.seed, i])
        expected_objects = st.n
        expected_src, expected_frc = self._history_sources, self._history_forced

        t0 = time.perf_counter()
        # Which objects are detected: a random subset of the existing ones + new ones.
        n_match = min(int(round(c.n_sources * c.match_fraction)), st.n) if st.n else 0
        n_new = c.n_sources - n_match
        matched = np.sort(rng.choice(st.n, n_match, replace=False)) if n_match else np.empty(0, int)
        source_ids = make_ids(visit, DETECTOR, c.n_sources)
        new_idx = np.arange(st.n, st.n + n_new)
        ra_new, dec_new = self._random_in_cone(rng, n_new)
        st.ids[new_idx] = source_ids[n_match:]  # new objects take the seeding diaSourceId
        st.true_ra[new_idx], st.true_dec[new_idx] = ra_new, dec_new
        st.amp[new_idx] = rng.lognormal(np.log(2000.0), 1.0, n_new)
        st.n += n_new
        idx = np.concatenate([matched, new_idx])

        # Measured DiaSources: truth + noise.
        pos_err = 0.05 / 3600.0
        ra = st.true_ra[idx] + rng.normal(0, pos_err, idx.size) / np.cos(np.radians(c.dec0))
        dec = st.true_dec[idx] + rng.normal(0, pos_err, idx.size)
        flux_err = rng.uniform(150.0, 250.0, idx.size)
        flux = st.amp[idx] * np.sin(mjd / 3.0 + idx) + rng.normal(0, 1, idx.size) * flux_err
        sci_err = flux_err * 1.1
        sci = st.amp[idx] * 2 + rng.normal(0, 1, idx.size) * sci_err
        x, y = self._pixels(ra, dec)
        n = idx.size
        src_core = {
            "diaSourceId": source_ids,
            "visit": np.full(n, visit),
            "detector": np.full(n, DETECTOR),
            "diaObjectId": st.ids[idx],
            "midpointMjdTai": np.full(n, mjd),
            "exposureTime": np.full(n, 30.0),
            "ra": ra,
            "dec": dec,
            "raErr": np.full(n, pos_err),
            "decErr": np.full(n, pos_err),
            "ra_dec_Cov": np.zeros(n),
            "x": x,
            "y": y,
            "xErr": np.full(n, 0.25),
            "yErr": np.full(n, 0.25),
            "psfFlux": flux,
            "psfFluxErr": flux_err,
            "snr": np.abs(flux) / flux_err,
            "scienceFlux": sci,
            "scienceFluxErr": sci_err,
            "band": np.full(n, band, dtype=object),
            "psfNdata": np.full(n, 441),
            "trailNdata": np.zeros(n),
            "dipoleNdata": np.zeros(n),
            "bboxSize": np.full(n, 21),
            "isDipole": np.zeros(n, bool),
            "timeProcessedMjdTai": np.full(n, mjd + 0.0005),
            "reliabilityVersion": np.full(n, "v1", dtype=object),
        }
        dia_sources = self._frame("DiaSource", src_core, n, rng)

        # Update the running statistics of the detected objects.
        st.nsrc[idx] += 1
        st.sum_ra[idx] += ra
        st.sum_dec[idx] += dec
        st.first[idx] = np.where(np.isnan(st.first[idx]), mjd, st.first[idx])
        st.last[idx] = mjd
        w = 1.0 / flux_err**2
        st.nd[b, idx] += 1
        st.sf[b, idx] += flux
        st.sf2[b, idx] += flux**2
        st.siv[b, idx] += w
        st.serr[b, idx] += flux_err
        st.fmin[b, idx] = np.fmin(st.fmin[b, idx], flux)
        st.fmax[b, idx] = np.fmax(st.fmax[b, idx], flux)
        slope = _nan_div(flux - st.last_f[b, idx], mjd - st.last_t[b, idx])
        st.slope[b, idx] = np.fmax(st.slope[b, idx], slope)
        st.last_f[b, idx], st.last_t[b, idx] = flux, mjd
        st.sci_sf[b, idx] += sci / sci_err**2
        st.sci_siv[b, idx] += 1.0 / sci_err**2

        # Forced photometry of every object of the field (after association).
        all_idx = np.arange(st.n)
        mean_ra = _nan_div(st.sum_ra[: st.n], st.nsrc[: st.n].astype(float))
        mean_dec = _nan_div(st.sum_dec[: st.n], st.nsrc[: st.n].astype(float))
        nf = st.n
        f_err = rng.uniform(150.0, 250.0, nf)
        f_flux = st.amp[all_idx] * np.sin(mjd / 3.0 + all_idx) + rng.normal(0, 1, nf) * f_err
        st.fp_sf[b, :nf] += f_flux / f_err**2
        st.fp_siv[b, :nf] += 1.0 / f_err**2
        frc_core = {
            "diaForcedSourceId": make_ids(visit, DETECTOR, nf),
            "diaObjectId": st.ids[:nf],
            "ra": mean_ra,
            "dec": mean_dec,
            "visit": np.full(nf, visit),
            "detector": np.full(nf, DETECTOR),
            "psfFlux": f_flux,
            "psfFluxErr": f_err,
            "midpointMjdTai": np.full(nf, mjd),
            "scienceFlux": st.amp[:nf] * 2 + rng.normal(0, 1, nf) * f_err,
            "scienceFluxErr": f_err * 1.1,
            "band": np.full(nf, band, dtype=object),
            "timeProcessedMjdTai": np.full(nf, mjd + 0.0005),
            "timeWithdrawnMjdTai": np.full(nf, np.nan),
        }
        dia_forced = self._frame("DiaForcedSource", frc_core, nf, rng)

        dia_objects = self._objects_frame(np.sort(idx), rng)
        compute_s = time.perf_counter() - t0

        self._history_sources += n
        self._history_forced += nf
        return VisitData(
            index=i,
            visit=visit,
            band=band,
            mjd=mjd,
            dia_objects=dia_objects,
            dia_sources=dia_sources,
            dia_forced_sources=dia_forced,
            expected_objects=expected_objects,
            expected_source_history=expected_src,
            expected_forced_history=expected_frc,
            compute_s=compute_s,
        )

    def _objects_frame(self, idx: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        """New versions of the DiaObjects ``idx`` from the running statistics."""
        st = self.state
        n = idx.size
        nsrc = st.nsrc[idx].astype(float)
        core: dict = {
            "diaObjectId": st.ids[idx],
            "ra": st.sum_ra[idx] / nsrc,
            "dec": st.sum_dec[idx] / nsrc,
            "raErr": 0.05 / 3600.0 / np.sqrt(nsrc),
            "decErr": 0.05 / 3600.0 / np.sqrt(nsrc),
            "ra_dec_Cov": np.zeros(n),
            "firstDiaSourceMjdTai": st.first[idx],
            "lastDiaSourceMjdTai": st.last[idx],
            "nDiaSources": st.nsrc[idx],
        }
        for b, band in enumerate(BANDS):
            nd = st.nd[b, idx].astype(float)
            mean = _nan_div(st.sf[b, idx], nd)
            var = _nan_div(st.sf2[b, idx], nd) - mean**2
            core[f"{band}_psfFluxNdata"] = st.nd[b, idx]
            core[f"{band}_psfFluxMean"] = mean
            core[f"{band}_psfFluxMeanErr"] = np.sqrt(_nan_div(np.ones(n), st.siv[b, idx]))
            core[f"{band}_psfFluxSigma"] = np.where(nd > 1, np.sqrt(np.maximum(var, 0)), np.nan)
            core[f"{band}_psfFluxMin"] = st.fmin[b, idx]
            core[f"{band}_psfFluxMax"] = st.fmax[b, idx]
            core[f"{band}_psfFluxMaxSlope"] = st.slope[b, idx]
            core[f"{band}_psfFluxErrMean"] = _nan_div(st.serr[b, idx], nd)
            core[f"{band}_scienceFluxMean"] = _nan_div(st.sci_sf[b, idx], st.sci_siv[b, idx])
            core[f"{band}_scienceFluxMeanErr"] = np.sqrt(_nan_div(np.ones(n), st.sci_siv[b, idx]))
            core[f"{band}_fpFluxMean"] = _nan_div(st.fp_sf[b, idx], st.fp_siv[b, idx])
            core[f"{band}_fpFluxMeanErr"] = np.sqrt(_nan_div(np.ones(n), st.fp_siv[b, idx]))
        return self._frame("DiaObject", core, n, rng)


def fill_frame(
    spec: dict, table: str, core: dict, n: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Return ``n`` rows of every column of ``table`` in ``spec`` (from `load_column_spec`).

    Columns named in ``core`` take its values (cast to the column's kind);
    every other column is filled by `DeepFieldWorkload._fill`, so rows are
    as wide as in production.
    """
    cols = {}
    for name, kind, nullable in spec[table]:
        if name in core:
            value = core[name]
            if kind == "str" or isinstance(value, pd.api.extensions.ExtensionArray):
                cols[name] = value
            else:
                cols[name] = np.asarray(value).astype(kind, copy=False)
        else:
            cols[name] = DeepFieldWorkload._fill(rng, kind, nullable, n, name)
    return pd.DataFrame(cols)
