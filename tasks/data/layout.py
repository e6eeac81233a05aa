"""The on-disk data layout: what a user points the pipeline at.

Everything lives under one root directory; images are `Exposure` FITS files,
tables are Parquet::

    ROOT/
      survey.yaml                      free-form description (the simulator writes its config)
      skymap.yaml                      sky-map definition (`tasks.data.skymap.SkyMapConfig`)
      visits.parquet                   one row per visit (see VISIT_COLUMNS)
      exposures/visit_VVVVVVV/det_DDD.fits             science exposure per visit/detector
      coadds/dcr/tract_T/patch_P/BAND/subfilter_K.fits DCR sub-filter coadd (K = 0 .. n-1)
      coadds/deep/tract_T/patch_P/BAND.fits            broadband deep coadd (optional)
      isolated_stars/tract_T/isolated_star_cat.parquet
      isolated_stars/tract_T/isolated_star_sources.parquet
      ssp/visit_VVVVVVV.parquet        predicted Solar System positions for the visit
      truth/objects.parquet            simulator truth: one row per object
      truth/sources.parquet            simulator truth: one row per object per visit/detector
      outputs/                         pipeline outputs (or a separate ``output_root``)
        visit_VVVVVVV/det_DDD/NAME.fits|.parquet
        alerts/visit_VVVVVVV_det_DDD.avro

Writes go to a temporary file renamed into place, so a crash never leaves a
half-written file under its final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from astropy.time import Time

from tasks.core.base import TaskError
from tasks.data.skymap import SkyMap
from tasks.images.errors import ImageError
from tasks.images.exposure import Exposure
from tasks.images.visit_info import VisitInfo, Weather

__all__ = [
    "DataLayout",
    "DataLayoutError",
    "check_layout",
    "VISIT_COLUMNS",
    "SSP_COLUMNS",
    "visit_info_from_row",
    "visit_info_to_row",
]

VISIT_COLUMNS = [
    "visit",
    "band",
    "midpointMjdTai",
    "expTime",
    "ra",
    "dec",
    "azimuth",
    "altitude",
    "airmass",
    "parallacticAngle",
    "skyRotation",
    "temperature",
    "pressure",
    "humidity",
]
"""Columns of ``visits.parquet`` (angles in degrees, weather in °C, hPa, %)."""

SSP_COLUMNS = ["ssObjectId", "ra", "dec"]
"""Required columns of a Solar System prediction table (optional: ``raRate``,
``decRate`` in deg/day with ``raRate`` including cos(dec), ``mag``)."""

_VISIT_DIR = re.compile(r"^visit_(\d+)$")
_DET_FILE = re.compile(r"^det_(\d+)\.fits$")


class DataLayoutError(TaskError):
    """A file of the data layout is missing, corrupt or lacks required columns."""


def visit_info_to_row(info: VisitInfo) -> dict[str, Any]:
    """Return the ``visits.parquet`` row describing ``info``."""
    return {
        "visit": info.visit_id,
        "band": info.band,
        "midpointMjdTai": info.midpoint_mjd_tai,
        "expTime": float(info.exposure_time),
        "ra": float(info.boresight_ra),
        "dec": float(info.boresight_dec),
        "azimuth": info.boresight_az,
        "altitude": info.boresight_alt,
        "airmass": float(info.airmass),
        "parallacticAngle": float(info.parallactic_angle),
        "skyRotation": float(info.rotator_angle),
        "temperature": float(info.weather.temperature),
        "pressure": float(info.weather.pressure),
        "humidity": float(info.weather.humidity),
    }


def visit_info_from_row(row: pd.Series | dict[str, Any]) -> VisitInfo:
    """Build a `VisitInfo` (Rubin's site) from a ``visits.parquet`` row."""
    return VisitInfo(
        visit_id=int(row["visit"]),
        exposure_time=float(row["expTime"]),
        midpoint=Time(float(row["midpointMjdTai"]), format="mjd", scale="tai"),
        band=str(row["band"]),
        boresight_ra=float(row["ra"]),
        boresight_dec=float(row["dec"]),
        boresight_az_alt=(float(row["azimuth"]), float(row["altitude"])),
        airmass=float(row["airmass"]),
        parallactic_angle=float(row["parallacticAngle"]),
        rotator_angle=float(row["skyRotation"]),
        weather=Weather(float(row["temperature"]), float(row["pressure"]), float(row["humidity"])),
    )


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_columns(df: pd.DataFrame, required: list[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataLayoutError(f"{what} lacks required column(s) {missing}")


class DataLayout:
    """Paths and readers/writers of one data directory.

    Parameters
    ----------
    root : `str` or `os.PathLike`
        The data directory.
    output_root : `str` or `os.PathLike`, optional
        Where pipeline outputs go; defaults to ``root/outputs``.
    """

    def __init__(
        self, root: str | os.PathLike[str], output_root: str | os.PathLike[str] | None = None
    ):
        self.root = Path(root)
        self.output_root = Path(output_root) if output_root is not None else self.root / "outputs"

    def __repr__(self) -> str:
        return f"DataLayout({str(self.root)!r})"

    def check(self) -> list[str]:
        """Return the problems found in this data directory (see `check_layout`)."""
        return check_layout(self)

    # -- generic table / exposure I/O -----------------------------------------
    @staticmethod
    def write_table(df: pd.DataFrame, path: Path) -> Path:
        """Write a DataFrame to Parquet atomically."""
        if not isinstance(df, pd.DataFrame):
            raise DataLayoutError(f"expected a DataFrame, got {type(df).__name__}")
        _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
        return path

    @staticmethod
    def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a Parquet table, with a clear error when missing or corrupt."""
        if not path.exists():
            raise DataLayoutError(f"missing table {path}")
        try:
            return pd.read_parquet(path, columns=columns)
        except (OSError, ValueError, KeyError) as exc:
            raise DataLayoutError(f"cannot read table {path}: {exc}") from exc

    @staticmethod
    def write_exposure_file(exposure: Exposure, path: Path) -> Path:
        """Write an exposure atomically."""
        _atomic_write(path, exposure.write_fits)
        return path

    @staticmethod
    def read_exposure_file(path: Path) -> Exposure:
        """Read an exposure, with a clear error when missing or corrupt."""
        if not path.exists():
            raise DataLayoutError(f"missing exposure {path}")
        try:
            return Exposure.read_fits(path)
        except ImageError as exc:
            raise DataLayoutError(str(exc)) from exc

    # -- survey description and sky map ---------------------------------------
    @property
    def survey_path(self) -> Path:
        """``survey.yaml``."""
        return self.root / "survey.yaml"

    def write_survey(self, description: dict[str, Any]) -> Path:
        """Write the free-form survey description."""
        text = yaml.safe_dump(description, sort_keys=False)
        _atomic_write(self.survey_path, lambda tmp: tmp.write_text(text))
        return self.survey_path

    def read_survey(self) -> dict[str, Any]:
        """Read the survey description."""
        if not self.survey_path.exists():
            raise DataLayoutError(f"missing {self.survey_path}")
        return yaml.safe_load(self.survey_path.read_text()) or {}

    @property
    def skymap_path(self) -> Path:
        """``skymap.yaml``."""
        return self.root / "skymap.yaml"

    def write_skymap(self, skymap: SkyMap) -> Path:
        """Write the sky-map definition."""
        text = yaml.safe_dump(skymap.to_dict(), sort_keys=False)
        _atomic_write(self.skymap_path, lambda tmp: tmp.write_text(text))
        return self.skymap_path

    def read_skymap(self) -> SkyMap:
        """Read the sky map."""
        if not self.skymap_path.exists():
            raise DataLayoutError(f"missing {self.skymap_path}")
        return SkyMap.from_dict(yaml.safe_load(self.skymap_path.read_text()))

    # -- visits and science exposures -----------------------------------------
    @property
    def visits_path(self) -> Path:
        """``visits.parquet``."""
        return self.root / "visits.parquet"

    def write_visit_table(self, visits: pd.DataFrame) -> Path:
        """Write the visit table (columns `VISIT_COLUMNS`; extra columns are kept)."""
        _check_columns(visits, VISIT_COLUMNS, "visit table")
        if visits["visit"].duplicated().any():
            raise DataLayoutError("visit table has duplicate visit ids")
        return self.write_table(
            visits.sort_values("visit").reset_index(drop=True), self.visits_path
        )

    def read_visit_table(self) -> pd.DataFrame:
        """Read the visit table."""
        df = self.read_table(self.visits_path)
        _check_columns(df, VISIT_COLUMNS, str(self.visits_path))
        return df

    def read_visit_info(self, visit: int) -> VisitInfo:
        """Return the `VisitInfo` of ``visit`` from the visit table."""
        df = self.read_visit_table()
        rows = df[df["visit"] == int(visit)]
        if rows.empty:
            raise DataLayoutError(f"visit {visit} is not in {self.visits_path}")
        return visit_info_from_row(rows.iloc[0])

    def exposure_path(self, visit: int, detector: int) -> Path:
        """Path of the science exposure of ``visit``/``detector``."""
        return self.root / "exposures" / f"visit_{int(visit):07d}" / f"det_{int(detector):03d}.fits"

    def write_exposure(
        self, exposure: Exposure, visit: int | None = None, detector: int | None = None
    ) -> Path:
        """Write a science exposure (visit/detector default to the exposure's own)."""
        if visit is None:
            if exposure.visit_info is None:
                raise DataLayoutError("exposure has no visit_info; pass visit explicitly")
            visit = exposure.visit_info.visit_id
        if detector is None:
            if exposure.detector is None:
                raise DataLayoutError("exposure has no detector; pass detector explicitly")
            detector = exposure.detector
        return self.write_exposure_file(exposure, self.exposure_path(visit, detector))

    def read_exposure(self, visit: int, detector: int) -> Exposure:
        """Read the science exposure of ``visit``/``detector``."""
        return self.read_exposure_file(self.exposure_path(visit, detector))

    def visits(self) -> list[int]:
        """Visits with at least one exposure, sorted."""
        base = self.root / "exposures"
        if not base.is_dir():
            return []
        out = []
        for entry in base.iterdir():
            m = _VISIT_DIR.match(entry.name)
            if m and entry.is_dir() and any(_DET_FILE.match(p.name) for p in entry.iterdir()):
                out.append(int(m.group(1)))
        return sorted(out)

    def detectors(self, visit: int) -> list[int]:
        """Detectors with an exposure for ``visit``, sorted."""
        base = self.root / "exposures" / f"visit_{int(visit):07d}"
        if not base.is_dir():
            return []
        return sorted(int(m.group(1)) for p in base.iterdir() if (m := _DET_FILE.match(p.name)))

    # -- coadds ------------------------------------------------------------------
    def dcr_coadd_path(self, tract: int, patch: int, band: str, subfilter: int) -> Path:
        """Path of one DCR sub-filter coadd."""
        return (
            self.root
            / "coadds"
            / "dcr"
            / f"tract_{int(tract)}"
            / f"patch_{int(patch)}"
            / band
            / f"subfilter_{int(subfilter)}.fits"
        )

    def write_dcr_coadd(
        self, exposure: Exposure, tract: int, patch: int, band: str, subfilter: int
    ) -> Path:
        """Write one DCR sub-filter coadd."""
        return self.write_exposure_file(
            exposure, self.dcr_coadd_path(tract, patch, band, subfilter)
        )

    def dcr_subfilters(self, tract: int, patch: int, band: str) -> list[int]:
        """Sub-filter indices present for a tract/patch/band, sorted."""
        base = self.dcr_coadd_path(tract, patch, band, 0).parent
        if not base.is_dir():
            return []
        pat = re.compile(r"^subfilter_(\d+)\.fits$")
        return sorted(int(m.group(1)) for p in base.iterdir() if (m := pat.match(p.name)))

    def read_dcr_coadds(self, tract: int, patch: int, band: str) -> list[Exposure]:
        """Read all sub-filter coadds of a patch/band, bluest first.

        Raises
        ------
        DataLayoutError
            If none exist, or the indices are not ``0 .. n-1``.
        """
        subs = self.dcr_subfilters(tract, patch, band)
        if not subs:
            raise DataLayoutError(f"no DCR coadds for tract {tract} patch {patch} band {band}")
        if subs != list(range(len(subs))):
            raise DataLayoutError(
                f"tract {tract} patch {patch} band {band} has sub-filters {subs}, not 0..n-1"
            )
        return [self.read_exposure_file(self.dcr_coadd_path(tract, patch, band, k)) for k in subs]

    def dcr_patches(self, band: str | None = None) -> list[tuple[int, int]]:
        """``(tract, patch)`` pairs with DCR coadds (in ``band`` if given), sorted."""
        base = self.root / "coadds" / "dcr"
        if not base.is_dir():
            return []
        out = set()
        for sub in base.glob("tract_*/patch_*/*/subfilter_0.fits"):
            if band is not None and sub.parent.name != band:
                continue
            out.add((int(sub.parents[2].name[6:]), int(sub.parents[1].name[6:])))
        return sorted(out)

    def deep_coadd_path(self, tract: int, patch: int, band: str) -> Path:
        """Path of a broadband deep coadd."""
        return (
            self.root
            / "coadds"
            / "deep"
            / f"tract_{int(tract)}"
            / f"patch_{int(patch)}"
            / f"{band}.fits"
        )

    def write_deep_coadd(self, exposure: Exposure, tract: int, patch: int, band: str) -> Path:
        """Write a broadband deep coadd."""
        return self.write_exposure_file(exposure, self.deep_coadd_path(tract, patch, band))

    def read_deep_coadd(self, tract: int, patch: int, band: str) -> Exposure:
        """Read a broadband deep coadd."""
        return self.read_exposure_file(self.deep_coadd_path(tract, patch, band))

    # -- isolated stars ------------------------------------------------------------
    def isolated_star_cat_path(self, tract: int) -> Path:
        """``isolated_stars/tract_T/isolated_star_cat.parquet``."""
        return self.root / "isolated_stars" / f"tract_{int(tract)}" / "isolated_star_cat.parquet"

    def isolated_star_sources_path(self, tract: int) -> Path:
        """``isolated_stars/tract_T/isolated_star_sources.parquet``."""
        return (
            self.root / "isolated_stars" / f"tract_{int(tract)}" / "isolated_star_sources.parquet"
        )

    def write_isolated_stars(
        self, tract: int, isolated_star_cat: pd.DataFrame, isolated_star_sources: pd.DataFrame
    ) -> None:
        """Write the isolated-star catalog and its per-visit sources for a tract."""
        _check_columns(isolated_star_cat, ["isolated_star_id", "ra", "dec"], "isolated_star_cat")
        _check_columns(
            isolated_star_sources,
            ["isolated_star_id", "obj_index", "visit", "detector", "band", "x", "y"],
            "isolated_star_sources",
        )
        self.write_table(isolated_star_cat, self.isolated_star_cat_path(tract))
        self.write_table(isolated_star_sources, self.isolated_star_sources_path(tract))

    def read_isolated_star_cat(self, tract: int) -> pd.DataFrame:
        """Read a tract's isolated-star catalog."""
        return self.read_table(self.isolated_star_cat_path(tract))

    def read_isolated_star_sources(
        self, tract: int, visit: int | None = None, detector: int | None = None
    ) -> pd.DataFrame:
        """Read a tract's isolated-star sources, optionally for one visit/detector."""
        df = self.read_table(self.isolated_star_sources_path(tract))
        return _select(df, visit, detector)

    def isolated_star_tracts(self) -> list[int]:
        """Tracts with an isolated-star catalog, sorted."""
        base = self.root / "isolated_stars"
        if not base.is_dir():
            return []
        return sorted(
            int(p.parent.name[6:]) for p in base.glob("tract_*/isolated_star_cat.parquet")
        )

    # -- Solar System predictions -----------------------------------------------------
    def ss_predictions_path(self, visit: int) -> Path:
        """``ssp/visit_VVVVVVV.parquet``."""
        return self.root / "ssp" / f"visit_{int(visit):07d}.parquet"

    def write_ss_predictions(self, visit: int, predictions: pd.DataFrame) -> Path:
        """Write the predicted Solar System positions for a visit."""
        _check_columns(predictions, SSP_COLUMNS, "Solar System predictions")
        if predictions["ssObjectId"].duplicated().any():
            raise DataLayoutError("Solar System predictions have duplicate ssObjectId")
        return self.write_table(predictions, self.ss_predictions_path(visit))

    def has_ss_predictions(self, visit: int) -> bool:
        """Whether a prediction table exists for the visit."""
        return self.ss_predictions_path(visit).exists()

    def read_ss_predictions(self, visit: int) -> pd.DataFrame:
        """Read the predicted Solar System positions for a visit."""
        df = self.read_table(self.ss_predictions_path(visit))
        _check_columns(df, SSP_COLUMNS, str(self.ss_predictions_path(visit)))
        return df

    # -- truth (simulator only) ---------------------------------------------------------
    @property
    def truth_objects_path(self) -> Path:
        """``truth/objects.parquet``."""
        return self.root / "truth" / "objects.parquet"

    @property
    def truth_sources_path(self) -> Path:
        """``truth/sources.parquet``."""
        return self.root / "truth" / "sources.parquet"

    def write_truth(self, objects: pd.DataFrame, sources: pd.DataFrame) -> None:
        """Write the simulator's truth tables."""
        self.write_table(objects, self.truth_objects_path)
        self.write_table(sources, self.truth_sources_path)

    def read_truth_objects(self) -> pd.DataFrame:
        """Read the per-object truth table."""
        return self.read_table(self.truth_objects_path)

    def read_truth_sources(
        self, visit: int | None = None, detector: int | None = None
    ) -> pd.DataFrame:
        """Read the per-visit truth table, optionally for one visit/detector."""
        return _select(self.read_table(self.truth_sources_path), visit, detector)

    # -- pipeline outputs ------------------------------------------------------------------
    def output_dir(self, visit: int, detector: int) -> Path:
        """Directory of the outputs of one visit/detector."""
        return self.output_root / f"visit_{int(visit):07d}" / f"det_{int(detector):03d}"

    def output_path(self, name: str, visit: int, detector: int, suffix: str) -> Path:
        """Path of output ``name`` (e.g. ``"diffim"``, ``"diaSources"``) with ``suffix``."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise DataLayoutError(f"invalid output name {name!r}")
        return self.output_dir(visit, detector) / f"{name}{suffix}"

    def write_output_exposure(
        self, name: str, exposure: Exposure, visit: int, detector: int
    ) -> Path:
        """Write an output image (e.g. the difference image) as ``NAME.fits``."""
        return self.write_exposure_file(exposure, self.output_path(name, visit, detector, ".fits"))

    def read_output_exposure(self, name: str, visit: int, detector: int) -> Exposure:
        """Read an output image."""
        return self.read_exposure_file(self.output_path(name, visit, detector, ".fits"))

    def write_output_table(self, name: str, df: pd.DataFrame, visit: int, detector: int) -> Path:
        """Write an output table (e.g. DiaSources) as ``NAME.parquet``."""
        return self.write_table(df, self.output_path(name, visit, detector, ".parquet"))

    def read_output_table(self, name: str, visit: int, detector: int) -> pd.DataFrame:
        """Read an output table."""
        return self.read_table(self.output_path(name, visit, detector, ".parquet"))

    def alerts_path(self, visit: int, detector: int) -> Path:
        """Avro file of the alerts of one visit/detector."""
        return self.output_root / "alerts" / f"visit_{int(visit):07d}_det_{int(detector):03d}.avro"


def check_layout(layout: DataLayout) -> list[str]:
    """Return the problems found in a data directory (empty when it is usable).

    Checks that the visit table exists with its columns and no duplicate
    visits, that every visit with exposures is in it (and the reverse), that
    the sky map reads, that every DCR patch/band has sub-filters ``0..n-1``,
    that isolated-star tables reference valid catalog rows, and that Solar
    System prediction tables have their columns.  Files are opened only as far
    as needed (exposure headers are not read).
    """
    problems: list[str] = []
    try:
        table = layout.read_visit_table()
        if table["visit"].duplicated().any():
            problems.append("visits.parquet has duplicate visits")
        listed = set(table["visit"].astype(int))
    except DataLayoutError as exc:
        problems.append(str(exc))
        listed = set()
    on_disk = set(layout.visits())
    if not on_disk:
        problems.append(f"no exposures under {layout.root / 'exposures'}")
    for visit in sorted(on_disk - listed):
        problems.append(f"visit {visit} has exposures but is not in visits.parquet")
    for visit in sorted(listed - on_disk):
        problems.append(f"visit {visit} is in visits.parquet but has no exposure")
    if layout.skymap_path.exists():
        try:
            layout.read_skymap()
        except TaskError as exc:
            problems.append(str(exc))
    base = layout.root / "coadds" / "dcr"
    for band_dir in sorted(base.glob("tract_*/patch_*/*")):
        tract = int(band_dir.parents[1].name[6:])
        patch = int(band_dir.parent.name[6:])
        subs = layout.dcr_subfilters(tract, patch, band_dir.name)
        if subs != list(range(len(subs))) or not subs:
            problems.append(
                f"DCR coadds of tract {tract} patch {patch} band {band_dir.name}: "
                f"sub-filters {subs}, expected 0..n-1"
            )
    for tract in layout.isolated_star_tracts():
        try:
            cat = layout.read_isolated_star_cat(tract)
            src = layout.read_isolated_star_sources(tract)
        except DataLayoutError as exc:
            problems.append(str(exc))
            continue
        if "obj_index" in src.columns and len(src):
            idx = src["obj_index"].to_numpy()
            if idx.min() < 0 or idx.max() >= len(cat):
                problems.append(f"isolated_star_sources of tract {tract}: obj_index out of range")
    for visit in sorted(on_disk):
        if layout.has_ss_predictions(visit):
            try:
                layout.read_ss_predictions(visit)
            except DataLayoutError as exc:
                problems.append(str(exc))
    return problems


def _select(df: pd.DataFrame, visit: int | None, detector: int | None) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    if visit is not None:
        mask &= df["visit"].to_numpy() == int(visit)
    if detector is not None:
        mask &= df["detector"].to_numpy() == int(detector)
    return df[mask].reset_index(drop=True)
