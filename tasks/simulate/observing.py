"""A plausible observing sequence: times, pointing geometry, rotation, weather, seeing.

Each night's visits step through hour angles within ``hour_angle_range``;
the time of a visit is when the field reaches that hour angle (local sidereal
time from ERFA's Greenwich mean sidereal time, UT1 taken as TAI - 37 s, which
is far inside the accuracy that matters here and needs no IERS download).
Altitude, azimuth and parallactic angle come from ERFA for Rubin's site.
"""

from __future__ import annotations

from dataclasses import dataclass

import erfa
import numpy as np
from astropy.time import Time

from tasks.images.visit_info import RUBIN_LATITUDE, RUBIN_LONGITUDE, VisitInfo, Weather
from tasks.images.wcs_utils import offset_sky
from tasks.simulate.config import SimulationConfig

__all__ = ["PlannedVisit", "plan_visits", "airmass_from_altitude", "local_sidereal_time"]

_TAI_MINUS_UT1_DAYS = 37.0 / 86400.0
_SIDEREAL_DEG_PER_DAY = 360.98564736629


@dataclass(frozen=True)
class PlannedVisit:
    """One visit of the sequence: its metadata and the seeing (zenith FWHM scaled to airmass)."""

    visit_info: VisitInfo
    seeing_fwhm: float
    night: int


def local_sidereal_time(mjd_tai: float, longitude_deg: float = RUBIN_LONGITUDE) -> float:
    """Local mean sidereal time in degrees at a TAI MJD."""
    jd1 = 2400000.5
    ut1 = mjd_tai - _TAI_MINUS_UT1_DAYS
    tt = mjd_tai + 32.184 / 86400.0
    gmst = erfa.gmst06(jd1, ut1, jd1, tt)
    return float((np.degrees(gmst) + longitude_deg) % 360.0)


def airmass_from_altitude(altitude_deg: float | np.ndarray) -> np.ndarray:
    """Airmass from altitude (Hardie 1962 polynomial in sec z)."""
    secz = 1.0 / np.sin(np.radians(altitude_deg))
    s1 = secz - 1.0
    return secz - 0.0018167 * s1 - 0.002875 * s1**2 - 0.0008083 * s1**3


def _time_at_hour_angle(night_start: float, ra: float, hour_angle_h: float) -> float:
    target_lst = (ra + 15.0 * hour_angle_h) % 360.0
    delta = (target_lst - local_sidereal_time(night_start)) % 360.0
    return night_start + delta / _SIDEREAL_DEG_PER_DAY


def plan_visits(config: SimulationConfig, rng: np.random.Generator) -> list[PlannedVisit]:
    """Return the visits of the survey, in time order.

    Parameters
    ----------
    config : `SimulationConfig`
        Survey definition.
    rng : `numpy.random.Generator`
        Source of randomness (dithers, rotation, weather, seeing).
    """
    lat = np.radians(RUBIN_LATITUDE)
    visits: list[PlannedVisit] = []
    n_nights = -(-config.n_visits // config.visits_per_night)
    ha_lo, ha_hi = config.hour_angle_range
    for night in range(n_nights):
        first = night * config.visits_per_night
        n_tonight = min(config.visits_per_night, config.n_visits - first)
        rotation = rng.uniform(-config.rotation_range, config.rotation_range)
        base_weather = (rng.normal(10.0, 3.0), rng.normal(744.0, 2.0), rng.uniform(10.0, 50.0))
        if n_tonight == 1:
            hour_angles = np.array([rng.uniform(ha_lo, ha_hi)])
        else:
            step = (ha_hi - ha_lo) / (n_tonight - 1)
            hour_angles = (
                np.linspace(ha_lo, ha_hi, n_tonight) + rng.uniform(-0.1, 0.1, n_tonight) * step
            )
        for j, hour_angle in enumerate(np.sort(hour_angles)):
            index = first + j
            band = config.bands[index % len(config.bands)]
            dither_r = config.dither * np.sqrt(rng.uniform())
            ra, dec = offset_sky(
                np.array([config.ra]), np.array([config.dec]), rng.uniform(0, 360), dither_r
            )
            ra, dec = float(ra[0]), float(dec[0])
            mjd = _time_at_hour_angle(config.start_mjd + night, ra, hour_angle)
            ha = np.radians((local_sidereal_time(mjd) - ra) % 360.0)
            az, el = erfa.hd2ae(ha, np.radians(dec), lat)
            parallactic = float(np.degrees(erfa.hd2pa(ha, np.radians(dec), lat)))
            altitude = float(np.degrees(el))
            airmass = float(airmass_from_altitude(altitude))
            weather = Weather(
                round(base_weather[0] + rng.normal(0, 0.3), 3),
                round(base_weather[1] + rng.normal(0, 0.3), 3),
                round(float(np.clip(base_weather[2] + rng.normal(0, 2.0), 0, 100)), 3),
            )
            rot = rotation + rng.uniform(-3.0, 3.0)
            info = VisitInfo(
                visit_id=config.first_visit + index,
                exposure_time=config.exposure_time,
                midpoint=Time(mjd, format="mjd", scale="tai"),
                band=band,
                boresight_ra=ra,
                boresight_dec=dec,
                boresight_az_alt=(float(np.degrees(az)), altitude),
                airmass=max(airmass, 1.0),
                parallactic_angle=parallactic,
                rotator_angle=float((rot + 180.0) % 360.0 - 180.0),
                weather=weather,
            )
            seeing = rng.uniform(*config.seeing_range) * airmass**0.6
            visits.append(PlannedVisit(info, float(seeing), night))
    return visits
