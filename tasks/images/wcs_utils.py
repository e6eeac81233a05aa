"""Helpers for astropy WCS objects in parent pixel coordinates."""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS, Sip

from tasks.images.errors import ImageError

__all__ = [
    "make_tan_wcs",
    "shift_wcs",
    "pixel_scale_arcsec",
    "sky_direction_in_pixels",
    "offset_sky",
]


def make_tan_wcs(
    ra: float,
    dec: float,
    crpix: tuple[float, float],
    pixel_scale_arcsec: float,
    rotation_deg: float = 0.0,
) -> WCS:
    """Build a gnomonic (TAN) WCS in 0-based parent pixel coordinates.

    Parameters
    ----------
    ra, dec : `float`
        Tangent point (deg).
    crpix : `tuple` [`float`, `float`]
        0-based parent pixel ``(x, y)`` of the tangent point.
    pixel_scale_arcsec : `float`
        Pixel scale in arcseconds.
    rotation_deg : `float`, optional
        Position angle (north through east) of the +y pixel axis.  The parity is
        the usual one (east to the left when north is up), so +x points to
        ``rotation_deg - 90``.
    """
    if pixel_scale_arcsec <= 0:
        raise ImageError(f"pixel scale must be positive, got {pixel_scale_arcsec}")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(ra), float(dec)]
    # FITS CRPIX is 1-based; our parent coordinates are 0-based.
    wcs.wcs.crpix = [float(crpix[0]) + 1.0, float(crpix[1]) + 1.0]
    scale = pixel_scale_arcsec / 3600.0
    rot = math.radians(rotation_deg)
    # columns: sky (east, north) components of the +x and +y pixel axes; the
    # intermediate world coordinate x grows to the east.
    x_axis = (-math.cos(rot), math.sin(rot))  # position angle rot - 90
    y_axis = (math.sin(rot), math.cos(rot))  # position angle rot
    wcs.wcs.cd = scale * np.array([[x_axis[0], y_axis[0]], [x_axis[1], y_axis[1]]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def shift_wcs(wcs: WCS, dx: float, dy: float) -> WCS:
    """Return a copy of ``wcs`` for pixel coordinates shifted by ``(-dx, -dy)``.

    The new WCS maps pixel ``p - (dx, dy)`` where the old one mapped ``p``; with
    ``(dx, dy)`` the origin of a box, it turns a parent WCS into the WCS of the
    box's array indices.  SIP distortion terms move with the reference pixel.
    """
    out = wcs.deepcopy()
    out.wcs.crpix = wcs.wcs.crpix - np.array([dx, dy], dtype=float)
    if wcs.sip is not None:
        sip = wcs.sip
        out.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, out.wcs.crpix)
    out.wcs.set()
    return out


def pixel_scale_arcsec(wcs: WCS, x: float | None = None, y: float | None = None) -> float:
    """Local pixel scale (arcsec, square root of the pixel area) at ``(x, y)`` (default CRPIX)."""
    if x is None or y is None:
        x, y = wcs.wcs.crpix[0] - 1.0, wcs.wcs.crpix[1] - 1.0
    ra, dec = wcs.all_pix2world([x, x + 1.0, x], [y, y, y + 1.0], 0)
    ex = _tangent_offsets(ra[0], dec[0], ra[1], dec[1])
    ey = _tangent_offsets(ra[0], dec[0], ra[2], dec[2])
    area = abs(ex[0] * ey[1] - ex[1] * ey[0])
    return math.sqrt(area) * 3600.0


def _tangent_offsets(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float]:
    """Small-angle (east, north) offsets in degrees of ``(ra, dec)`` from ``(ra0, dec0)``."""
    dra = (ra - ra0 + 180.0) % 360.0 - 180.0
    return (dra * math.cos(math.radians(dec0)), dec - dec0)


def offset_sky(
    ra: np.ndarray,
    dec: np.ndarray,
    position_angle_deg: float | np.ndarray,
    distance_arcsec: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Move points a distance along a position angle on the sphere (exact great circle)."""
    ra_r = np.radians(ra)
    dec_r = np.radians(dec)
    pa = np.radians(position_angle_deg)
    d = np.radians(np.asarray(distance_arcsec) / 3600.0)
    sin_dec = np.sin(dec_r) * np.cos(d) + np.cos(dec_r) * np.sin(d) * np.cos(pa)
    new_dec = np.arcsin(np.clip(sin_dec, -1, 1))
    new_ra = ra_r + np.arctan2(
        np.sin(pa) * np.sin(d) * np.cos(dec_r), np.cos(d) - np.sin(dec_r) * sin_dec
    )
    return np.degrees(new_ra) % 360.0, np.degrees(new_dec)


def sky_direction_in_pixels(
    wcs: WCS, x: float, y: float, position_angle_deg: float
) -> tuple[float, float]:
    """Return the pixel unit vector along a sky position angle at ``(x, y)``.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        WCS in parent pixel coordinates.
    x, y : `float`
        Where to evaluate the direction.
    position_angle_deg : `float`
        Position angle on the sky, from north through east (e.g. the
        parallactic angle, which points to the zenith).

    Returns
    -------
    dx, dy : `float`
        Unit vector in pixels.
    """
    ra, dec = wcs.all_pix2world([x], [y], 0)
    ra2, dec2 = offset_sky(ra, dec, position_angle_deg, 1.0)
    x2, y2 = wcs.all_world2pix(ra2, dec2, 0)
    vx, vy = float(x2[0] - x), float(y2[0] - y)
    norm = math.hypot(vx, vy)
    return vx / norm, vy / norm


def wcs_to_params(wcs: WCS) -> dict:
    """Return the exact (float64) state of a 2-D celestial WCS, SIP included.

    FITS header cards hold about 14 significant digits; these values keep
    every bit, so `params_to_wcs` rebuilds an identical transformation.
    """
    if wcs.naxis != 2:
        raise ImageError(f"only 2-D WCSs are supported, got {wcs.naxis} axes")
    w = wcs.wcs
    params: dict = {
        "ctype1": w.ctype[0],
        "ctype2": w.ctype[1],
        "crval": np.array(w.crval, dtype=float),
        "crpix": np.array(w.crpix, dtype=float),
        "lonpole": float(w.lonpole),
        "latpole": float(w.latpole),
        "radesys": w.radesys or "ICRS",
    }
    if w.has_cd():
        params["cd"] = np.array(w.cd, dtype=float)
    else:
        params["pc"] = np.array(w.get_pc(), dtype=float)
        params["cdelt"] = np.array(w.cdelt, dtype=float)
    if wcs.sip is not None:
        params["sip_a"] = np.array(wcs.sip.a, dtype=float)
        params["sip_b"] = np.array(wcs.sip.b, dtype=float)
        if wcs.sip.ap is not None:
            params["sip_ap"] = np.array(wcs.sip.ap, dtype=float)
            params["sip_bp"] = np.array(wcs.sip.bp, dtype=float)
    return params


def params_to_wcs(params: dict) -> WCS:
    """Rebuild a WCS from `wcs_to_params` output."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [params["ctype1"], params["ctype2"]]
    wcs.wcs.crval = params["crval"]
    wcs.wcs.crpix = params["crpix"]
    if "cd" in params:
        wcs.wcs.cd = params["cd"]
    else:
        wcs.wcs.pc = params["pc"]
        wcs.wcs.cdelt = params["cdelt"]
    wcs.wcs.lonpole = params["lonpole"]
    wcs.wcs.latpole = params["latpole"]
    wcs.wcs.radesys = params["radesys"]
    if "sip_a" in params:
        wcs.sip = Sip(
            params["sip_a"],
            params["sip_b"],
            params.get("sip_ap"),
            params.get("sip_bp"),
            wcs.wcs.crpix,
        )
    wcs.wcs.set()
    return wcs
