"""Instrument profiles: how an instrument's calibrated FITS images become exposures.

A profile is a small YAML file (shipped: ``ours``, ``ztf``, ``decam``,
``generic`` in ``tasks/ingest/profiles/``; a user passes the path of their
own).  A header value is named by its keyword (a string) or given literally
(a number); every field is documented on `InstrumentProfile`.  Example (ZTF)::

    name: ztf
    image_hdu: 0
    mask_planes: {SAT: [8], BAD: [2, 3, 4, 9, 10], CR: [7], SUSPECT: [0, 5, 6, 12]}
    gain: GAIN             # e-/DN (keyword)
    read_noise: READNOI    # electrons
    subtract_background: true
    time: OBSJD
    time_format: jd
    exposure_time: EXPTIME
    band: FILTER
    bands: {ZTF_g: g, ZTF_r: r, ZTF_i: i}
    zero_point: MAGZP      # AB magnitude of one DN
    visit: EXPID
    detector: RCID
    seeing_fwhm_pixels: SEEING
    site: {lat: OBSLAT, lon: OBSLON, height: OBSALT}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.ingest.errors import IngestError

__all__ = ["InstrumentProfile", "load_profile", "PROFILE_DIR", "shipped_profiles"]

PROFILE_DIR = Path(__file__).parent / "profiles"
"""Folder of the shipped profiles."""

Value = float | str | None


class SiteProfile(BaseModel):
    """Observatory location: keywords or numbers (degrees east, degrees, metres)."""

    model_config = ConfigDict(extra="forbid")
    lat: Value = None
    lon: Value = None
    height: Value = None


class InstrumentProfile(BaseModel):
    """How to read one instrument's calibrated single-epoch images."""

    model_config = ConfigDict(extra="forbid")

    name: str
    format: Literal["image", "exposure"] = Field(
        "image", description="'exposure': files this project wrote (Exposure FITS), read as is."
    )
    image_hdu: int | str = Field(0, description="HDU index or EXTNAME of the image.")
    variance_hdu: int | str | None = Field(None, description="HDU of the variance-like plane.")
    variance_kind: Literal["variance", "inverse_variance", "stddev"] = "variance"
    mask_hdu: int | str | None = Field(None, description="HDU of the integer bitmask.")
    mask_planes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Our mask plane -> the instrument's mask bit numbers that set it; "
        "any listed bit is mapped, bits not listed are ignored.",
    )
    mask_nonzero_plane: str | None = Field(
        None, description="Our plane set wherever the instrument mask is non-zero (e.g. BAD)."
    )
    gain: Value = Field(None, description="Gain in electrons per image unit.")
    read_noise: Value = Field(None, description="Read noise in electrons.")
    subtract_background: bool = Field(
        False, description="Subtract a smooth background (images that still hold the sky)."
    )
    background_mesh: int = Field(128, ge=16, description="Background mesh size (pixels).")
    time: str = "MJD-OBS"
    time_format: Literal["jd", "mjd", "isot"] = "mjd"
    time_scale: Literal["utc", "tai", "tt"] = "utc"
    time_reference: Literal["start", "mid"] = "start"
    exposure_time: Value = "EXPTIME"
    band: str = "FILTER"
    bands: dict[str, str] = Field(
        default_factory=dict,
        description="Header band value -> u g r i z y; a key also matches as a prefix.",
    )
    zero_point: Value = Field(None, description="AB magnitude of one image unit.")
    airmass: Value = "AIRMASS"
    azimuth: Value = None
    altitude: Value = None
    ra: Value = Field(None, description="Boresight RA (deg or sexagesimal hours).")
    dec: Value = None
    visit: Value = Field(None, description="Visit (exposure) number; else made from the time.")
    detector: Value = 0
    seeing_fwhm_pixels: Value = None
    temperature: Value = None
    pressure: Value = None
    humidity: Value = None
    site: SiteProfile = Field(default_factory=SiteProfile)


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> InstrumentProfile:
    """Load a shipped profile by name, or a user's profile from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix and (PROFILE_DIR / f"{path.name}.yaml").exists():
        path = PROFILE_DIR / f"{path.name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError:
        raise IngestError(
            f"no instrument profile {name_or_path!r} (shipped: {', '.join(shipped_profiles())})"
        ) from None
    except yaml.YAMLError as exc:
        raise IngestError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise IngestError(f"profile {path} must hold a YAML mapping")
    try:
        return InstrumentProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IngestError(f"bad instrument profile {path} ({where}): {first['msg']}") from None
