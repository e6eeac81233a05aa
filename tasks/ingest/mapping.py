"""Column mapping of a user's detection catalog onto APDB DiaSource columns.

A user whose own pipeline produced difference-image detections describes
their table with a small YAML file (or the equivalent CLI options)::

    columns:                 # APDB name: the user's column
      diaSourceId: candid    # optional: ids are made from visit/detector/row otherwise
      ra: ra                 # degrees, ICRS
      dec: dec
      flux: magpsf           # a magnitude or a flux column (see flux_unit)
      fluxErr: sigmapsf
      time: jd
      band: fid
      visit: exposure_id     # optional: visits are made from the time otherwise
      detector: ccd          # optional: 0 otherwise
      sign: isdiffpos        # optional: the sign of a difference magnitude
      x: xpos                # optional pixel coordinates
      y: ypos
      raErr: ra_err          # optional, degrees
      decErr: dec_err
    flux_unit: mag           # mag (AB) | nJy | uJy | mJy | Jy
    time_format: jd          # jd | mjd
    time_scale: utc          # utc | tai | tt
    time_reference: start    # start | mid: whether ``time`` is the exposure start
    exposure_time: 30.0      # seconds (or the name of a column), for time_reference start
    bands: {1: g, 2: r, 3: i}  # the user's band values -> u g r i z y

Magnitudes become fluxes in nJy (AB: 31.4 mag = 1 nJy), with the error
``flux * ln(10) / 2.5 * magErr``; a difference magnitude is the magnitude
of ``|science - template|``, so ``sign`` (``t``/``1``/``+``/true positive,
``f``/``0``/``-``/false negative) gives the flux its sign.  Times become
the exposure midpoint as TAI MJD.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.ingest.errors import IngestError

__all__ = ["ColumnMapping", "load_mapping", "AB_NJY_ZERO_POINT", "FLUX_UNITS_NJY"]

AB_NJY_ZERO_POINT = 31.4
"""AB magnitude of a 1 nJy source (2.5 log10(3631e9))."""

FLUX_UNITS_NJY = {"nJy": 1.0, "uJy": 1e3, "mJy": 1e6, "Jy": 1e9}
"""nJy per unit of the supported flux units."""

_REQUIRED = ("ra", "dec", "flux", "fluxErr", "time", "band")
_OPTIONAL = ("diaSourceId", "visit", "detector", "sign", "x", "y", "raErr", "decErr")


class ColumnMapping(BaseModel):
    """How a detection catalog's columns become DiaSource columns (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(description="APDB name -> the catalog's column name.")
    flux_unit: Literal["mag", "nJy", "uJy", "mJy", "Jy"] = "nJy"
    time_format: Literal["jd", "mjd"] = "mjd"
    time_scale: Literal["utc", "tai", "tt"] = "tai"
    time_reference: Literal["start", "mid"] = "mid"
    exposure_time: float | str | None = Field(
        None, description="Seconds, or a column name; needed when time_reference is 'start'."
    )
    bands: dict[str, str] | None = Field(
        None, description="The catalog's band values (as strings) -> APDB bands u g r i z y."
    )
    visit_resolution_seconds: float = Field(
        1.0,
        gt=0.0,
        description="Without a visit column, detections whose midpoints round to the same "
        "multiple of this many seconds (since MJD 0) form one visit.",
    )

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise ValueError(f"unknown APDB column(s) {unknown}; known: {_REQUIRED + _OPTIONAL}")
        missing = [c for c in _REQUIRED if c not in value]
        if missing:
            raise ValueError(f"the mapping lacks required column(s) {missing}")
        return value

    @field_validator("bands", mode="before")
    @classmethod
    def _band_keys_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    def model_post_init(self, __context: Any) -> None:
        """Check the combinations that single fields cannot."""
        if self.time_reference == "start" and self.exposure_time is None:
            raise IngestError("time_reference 'start' needs exposure_time (seconds or a column)")
        if isinstance(self.exposure_time, float) and not (
            math.isfinite(self.exposure_time) and self.exposure_time >= 0
        ):
            raise IngestError(f"exposure_time must be >= 0, got {self.exposure_time}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnMapping:
        """Build from a dictionary, with our error on bad content."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "mapping"
            raise IngestError(f"bad column mapping ({where}): {first['msg']}") from None


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read a `ColumnMapping` from a YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise IngestError(f"cannot read the column mapping {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise IngestError(f"the column mapping {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise IngestError(f"the column mapping {path} must be a YAML mapping")
    return ColumnMapping.from_dict(data)
