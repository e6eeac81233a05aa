"""Configuration of the survey simulator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.images.filters import BANDS

__all__ = ["SimulationConfig"]


class SimulationConfig(BaseModel):
    """Everything that defines a simulated survey; the same config and seed give the same files.

    The defaults make a small survey (2 detectors of 1024² pixels, 10 visits
    in g and r over two nights, ~1,700 objects) that writes in seconds;
    `SimulationConfig.tiny` is smaller still (for unit tests) and
    `SimulationConfig.benchmark` is one 4k×4k detector with 10,000 sources.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = Field(42, description="Seed of every random draw.")
    ra: float = Field(150.0, ge=0, lt=360, description="Field centre right ascension, deg.")
    dec: float = Field(-25.0, ge=-90, le=90, description="Field centre declination, deg.")
    pixel_scale: float = Field(0.2, gt=0, description="Pixel scale, arcsec.")
    n_detectors: int = Field(2, ge=1, le=16, description="Detectors, laid out in a row along x.")
    detector_size: tuple[int, int] = Field((1024, 1024), description="(width, height) pixels.")
    detector_gap: int = Field(50, ge=0, description="Gap between detectors, pixels.")
    # -- observing sequence
    n_visits: int = Field(10, ge=1, lt=10**6, description="Number of visits.")
    first_visit: int = Field(1000, ge=0, description="Id of the first visit (then +1 each).")
    visits_per_night: int = Field(5, ge=1, description="Visits per night.")
    bands: list[str] = Field(["g", "r"], description="Bands, cycled visit by visit.")
    start_mjd: float = Field(61000.0, description="TAI MJD of the first night.")
    exposure_time: float = Field(30.0, gt=0, description="Exposure time, s.")
    hour_angle_range: tuple[float, float] = Field(
        (-3.0, 3.0), description="Hour angles (h) spanned by each night's visits."
    )
    dither: float = Field(10.0, ge=0, description="Max boresight offset per visit, arcsec.")
    rotation_range: float = Field(
        10.0, ge=0, le=180, description="Sky rotation angle drawn within +-this per night, deg."
    )
    seeing_range: tuple[float, float] = Field(
        (0.65, 0.95), description="Zenith PSF FWHM range, arcsec (scaled by airmass**0.6)."
    )
    psf_gradient: float = Field(
        0.06, ge=0, description="Relative PSF width change across half a detector."
    )
    # -- noise and detector effects
    calibration: float = Field(3.0, gt=0, description="nJy per count (all bands).")
    sky: dict[str, float] = Field(
        default_factory=lambda: {
            "u": 60.0,
            "g": 180.0,
            "r": 320.0,
            "i": 480.0,
            "z": 700.0,
            "y": 800.0,
        },
        description="Sky level per band, counts per pixel.",
    )
    read_noise: float = Field(5.0, ge=0, description="Read noise, counts.")
    saturation: float = Field(30000.0, gt=0, description="Saturation level, counts above sky.")
    n_bad_columns: int = Field(2, ge=0, description="Bad columns per detector.")
    n_cosmic_rays: int = Field(15, ge=0, description="Cosmic rays per exposure.")
    apply_dcr: bool = Field(
        True, description="Spread each source's light along the zenith by its SED's DCR."
    )
    dcr_render_tolerance: float = Field(
        1e-5,
        gt=0,
        lt=1,
        description="Largest error, relative to the PSF peak, from drawing each source's "
        "DCR-spread light as a few components (more components when smaller).",
    )
    # -- sources (counts over the whole field covered by the visits)
    n_static: int = Field(1500, ge=0, description="Static stars.")
    n_variable: int = Field(60, ge=0, description="Variable stars.")
    n_transient: int = Field(30, ge=0, description="Transients.")
    n_sso: int = Field(40, ge=0, description="Solar System objects.")
    n_bright: int = Field(
        3, ge=0, description="Of the static stars, how many are bright (13.5-15 mag, saturated)."
    )
    mag_range: tuple[float, float] = Field(
        (15.0, 24.5), description="r magnitude range of static stars."
    )
    sed_slope_range: tuple[float, float] = Field(
        (-2.5, 2.5), description="Range of spectral slopes (f_nu ~ lambda**slope)."
    )
    sso_rate_range: tuple[float, float] = Field(
        (0.05, 0.5), description="Solar System object speed range, deg/day."
    )
    sso_prediction_error: float = Field(
        0.15, ge=0, description="1-sigma error per axis of predicted SSO positions, arcsec."
    )
    isolation_radius: float = Field(
        3.0, gt=0, description="An isolated star has no other object within this, arcsec."
    )
    isolated_mag_limit: float = Field(22.0, description="Isolated stars brighter than this r mag.")
    # -- coadds / sky map
    n_subfilters: int = Field(3, ge=1, description="DCR sub-filters per band.")
    coadd_seeing: float = Field(0.55, gt=0, description="PSF FWHM of the coadds, arcsec.")
    coadd_depth: float = Field(
        40.0, gt=0, description="Coadd noise variance = single-visit sky variance / depth."
    )
    patch_inner_size: tuple[int, int] | None = Field(
        None, description="Patch inner size, pixels; None sizes one patch to the survey footprint."
    )
    patch_border: int = Field(50, ge=0, description="Patch border, pixels.")
    write_deep_coadds: bool = Field(True, description="Also write broadband deep coadds.")

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, bands: list[str]) -> list[str]:
        if not bands:
            raise ValueError("at least one band is needed")
        unknown = [b for b in bands if b not in BANDS]
        if unknown:
            raise ValueError(f"unknown band(s) {unknown}")
        return bands

    @classmethod
    def tiny(cls, **overrides: object) -> SimulationConfig:
        """Return a config for unit tests: one 512² detector, 4 visits, ~330 objects."""
        base: dict[str, object] = {
            "n_detectors": 1,
            "detector_size": (512, 512),
            "n_visits": 4,
            "visits_per_night": 4,
            "n_static": 300,
            "mag_range": (15.0, 23.0),
            "n_variable": 15,
            "n_transient": 8,
            "n_sso": 10,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def benchmark(cls, **overrides: object) -> SimulationConfig:
        """Return the benchmark config: one 4k×4k detector with 10,000 sources."""
        base: dict[str, object] = {
            "n_detectors": 1,
            "detector_size": (4096, 4096),
            "n_visits": 1,
            "bands": ["r"],
            "n_static": 9600,
            "n_variable": 200,
            "n_transient": 100,
            "n_sso": 100,
        }
        base.update(overrides)
        return cls(**base)
