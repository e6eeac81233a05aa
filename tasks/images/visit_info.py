"""Observing conditions of one visit.

Field names and units
---------------------
``visit_id`` (int), ``exposure_time`` (s), ``midpoint`` (astropy `Time`, TAI
scale: the middle of the exposure), ``band`` (``u g r i z y``),
``boresight_ra``/``boresight_dec`` (deg, ICRS), ``boresight_az_alt``
(``(azimuth, altitude)`` deg; azimuth from north through east),
``airmass``, ``parallactic_angle`` (deg: position angle of the zenith at the
boresight, measured from north through east), ``rotator_angle`` (deg: the
sky rotation angle, LSST's ``rotSkyPos``: position angle of the detector's
+y axis, from north through east; our simulated WCSs have the usual
east-left parity, so +x points to ``rotator_angle - 90``), ``observatory``
(astropy `EarthLocation`, Rubin's site by default) and ``weather``
(`Weather`: air temperature in °C, pressure in hPa, relative humidity in %).

With these conventions the zenith lies, on a visit's detector, along
``(dx, dy) = (-sin(q - rot), cos(q - rot))`` with ``q`` the parallactic
angle and ``rot`` the rotator angle; `tasks.images.wcs_utils.sky_direction_in_pixels`
gives the direction for any WCS (e.g. a patch's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.io import fits
from astropy.time import Time

from tasks.images.errors import ImageError
from tasks.images.filters import get_band
from tasks.images.persistence import params_from_hdu, params_to_hdu

__all__ = [
    "VisitInfo",
    "Weather",
    "RUBIN_OBSERVATORY",
    "RUBIN_LATITUDE",
    "RUBIN_LONGITUDE",
    "RUBIN_HEIGHT",
]

RUBIN_LATITUDE = -30.2446
RUBIN_LONGITUDE = -70.7494
RUBIN_HEIGHT = 2663.0
RUBIN_OBSERVATORY = EarthLocation.from_geodetic(
    lon=RUBIN_LONGITUDE * u.deg, lat=RUBIN_LATITUDE * u.deg, height=RUBIN_HEIGHT * u.m
)


@dataclass(frozen=True)
class Weather:
    """Weather at the telescope during a visit.

    Parameters
    ----------
    temperature : `float`
        Air temperature in degrees Celsius.
    pressure : `float`
        Air pressure in hPa.
    humidity : `float`
        Relative humidity in percent (0-100).
    """

    temperature: float = 10.0
    pressure: float = 744.0
    humidity: float = 40.0

    def __post_init__(self) -> None:
        if not (-100 < self.temperature < 100):
            raise ImageError(f"implausible temperature {self.temperature} C")
        if not (0 < self.pressure < 1200):
            raise ImageError(f"implausible pressure {self.pressure} hPa")
        if not (0 <= self.humidity <= 100):
            raise ImageError(f"humidity must be within 0-100 %, got {self.humidity}")


@dataclass(frozen=True, eq=False)
class VisitInfo:
    """Metadata of one visit (see the module docstring for units and conventions)."""

    visit_id: int
    exposure_time: float
    midpoint: Time
    band: str
    boresight_ra: float
    boresight_dec: float
    boresight_az_alt: tuple[float, float]
    airmass: float
    parallactic_angle: float
    rotator_angle: float
    observatory: EarthLocation = field(default_factory=lambda: RUBIN_OBSERVATORY)
    weather: Weather = field(default_factory=Weather)

    def __post_init__(self) -> None:
        get_band(self.band)
        if not isinstance(self.midpoint, Time):
            raise ImageError("VisitInfo.midpoint must be an astropy Time")
        object.__setattr__(self, "midpoint", self.midpoint.tai)
        object.__setattr__(self, "visit_id", int(self.visit_id))
        az, alt = self.boresight_az_alt
        object.__setattr__(self, "boresight_az_alt", (float(az), float(alt)))
        if not (np.isfinite(self.airmass) and self.airmass >= 1.0):
            raise ImageError(f"airmass must be >= 1, got {self.airmass}")

    @property
    def midpoint_mjd_tai(self) -> float:
        """Exposure midpoint as a TAI MJD."""
        return float(self.midpoint.tai.mjd)

    @property
    def boresight_az(self) -> float:
        """Boresight azimuth in degrees (north through east)."""
        return self.boresight_az_alt[0]

    @property
    def boresight_alt(self) -> float:
        """Boresight altitude in degrees."""
        return self.boresight_az_alt[1]

    @property
    def zenith_distance(self) -> float:
        """Boresight zenith distance in degrees."""
        return 90.0 - self.boresight_az_alt[1]

    @property
    def site_latitude(self) -> float:
        """Geodetic latitude of the observatory in degrees."""
        return float(self.observatory.lat.to_value(u.deg))

    @property
    def site_height(self) -> float:
        """Height of the observatory above the ellipsoid in metres."""
        return float(self.observatory.height.to_value(u.m))

    def zenith_direction_on_detector(self) -> tuple[float, float]:
        """Return the unit vector ``(dx, dy)`` toward the zenith in detector pixels (our WCSs)."""
        angle = math.radians(self.parallactic_angle - self.rotator_angle)
        return (-math.sin(angle), math.cos(angle))

    def to_hdu(self) -> fits.ImageHDU:
        """Return the visit info as a FITS HDU (lossless: times as two float64 Julian dates)."""
        loc = self.observatory.geocentric
        return params_to_hdu(
            {
                "visit_id": self.visit_id,
                "exposure_time": float(self.exposure_time),
                "midpoint_jd1": float(self.midpoint.jd1),
                "midpoint_jd2": float(self.midpoint.jd2),
                "band": self.band,
                "boresight_ra": float(self.boresight_ra),
                "boresight_dec": float(self.boresight_dec),
                "boresight_az": self.boresight_az_alt[0],
                "boresight_alt": self.boresight_az_alt[1],
                "airmass": float(self.airmass),
                "parallactic_angle": float(self.parallactic_angle),
                "rotator_angle": float(self.rotator_angle),
                "obs_x": float(loc[0].to_value(u.m)),
                "obs_y": float(loc[1].to_value(u.m)),
                "obs_z": float(loc[2].to_value(u.m)),
                "temperature": float(self.weather.temperature),
                "pressure": float(self.weather.pressure),
                "humidity": float(self.weather.humidity),
            }
        )

    @classmethod
    def from_hdu(cls, hdu: fits.ImageHDU) -> VisitInfo:
        """Rebuild from `to_hdu`'s output."""
        p = params_from_hdu(hdu)
        return cls(
            visit_id=int(p["visit_id"]),
            exposure_time=p["exposure_time"],
            midpoint=Time(p["midpoint_jd1"], p["midpoint_jd2"], format="jd", scale="tai"),
            band=p["band"],
            boresight_ra=p["boresight_ra"],
            boresight_dec=p["boresight_dec"],
            boresight_az_alt=(p["boresight_az"], p["boresight_alt"]),
            airmass=p["airmass"],
            parallactic_angle=p["parallactic_angle"],
            rotator_angle=p["rotator_angle"],
            observatory=EarthLocation.from_geocentric(
                p["obs_x"] * u.m, p["obs_y"] * u.m, p["obs_z"] * u.m
            ),
            weather=Weather(p["temperature"], p["pressure"], p["humidity"]),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VisitInfo) and self.same_as(other)

    __hash__ = None  # type: ignore[assignment]

    def same_as(self, other: VisitInfo) -> bool:
        """Exact equality of every field (times compared by their two Julian-date parts)."""
        if not isinstance(other, VisitInfo):
            return False
        return params_from_hdu(self.to_hdu()) == params_from_hdu(other.to_hdu())
