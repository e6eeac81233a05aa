"""Small vectorised sky-geometry helpers shared by the association tasks.

Everything works on numpy arrays of ICRS coordinates in degrees and uses unit
vectors, so there is no trouble at ``ra = 0/360`` or near the poles.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ARCSEC_PER_RAD",
    "unit_vectors",
    "chord_for_arcsec",
    "chord_to_arcsec",
    "tangent_offsets_arcsec",
    "tangent_to_radec",
    "vectors_to_radec",
]

ARCSEC_PER_RAD = np.degrees(1.0) * 3600.0


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Return ``(n, 3)`` unit vectors for ``ra``, ``dec`` in degrees."""
    ra_rad = np.radians(np.asarray(ra, dtype=np.float64))
    dec_rad = np.radians(np.asarray(dec, dtype=np.float64))
    cos_dec = np.cos(dec_rad)
    return np.column_stack((cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)))


def chord_for_arcsec(radius_arcsec: float) -> float:
    """Return the chord length on the unit sphere of an angle in arcseconds."""
    return 2.0 * np.sin(0.5 * radius_arcsec / ARCSEC_PER_RAD)


def chord_to_arcsec(chord: np.ndarray) -> np.ndarray:
    """Return the angles in arcseconds of chord lengths on the unit sphere."""
    return 2.0 * np.arcsin(np.clip(0.5 * np.asarray(chord), 0.0, 1.0)) * ARCSEC_PER_RAD


def tangent_offsets_arcsec(
    ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return gnomonic offsets (east, north) in arcsec of ``(ra, dec)`` about ``(ra0, dec0)``.

    Parameters
    ----------
    ra, dec : `numpy.ndarray`
        Positions in degrees.
    ra0, dec0 : `numpy.ndarray`
        Tangent points in degrees (broadcast against ``ra``, ``dec``).

    Returns
    -------
    d_east, d_north : `numpy.ndarray`
        Offsets along increasing ra and dec, in arcseconds.
    """
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    ra0_r, dec0_r = np.radians(ra0), np.radians(dec0)
    d_ra = ra_r - ra0_r
    cos_c = np.sin(dec0_r) * np.sin(dec_r) + np.cos(dec0_r) * np.cos(dec_r) * np.cos(d_ra)
    xi = np.cos(dec_r) * np.sin(d_ra) / cos_c
    eta = (np.cos(dec0_r) * np.sin(dec_r) - np.sin(dec0_r) * np.cos(dec_r) * np.cos(d_ra)) / cos_c
    return xi * ARCSEC_PER_RAD, eta * ARCSEC_PER_RAD


def tangent_to_radec(
    d_east: np.ndarray, d_north: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(ra, dec)`` in degrees of gnomonic offsets (arcsec) about ``(ra0, dec0)``.

    The inverse of `tangent_offsets_arcsec`.
    """
    xi = np.asarray(d_east, dtype=np.float64) / ARCSEC_PER_RAD
    eta = np.asarray(d_north, dtype=np.float64) / ARCSEC_PER_RAD
    ra0_r, dec0_r = np.radians(ra0), np.radians(dec0)
    denom = np.cos(dec0_r) - eta * np.sin(dec0_r)
    ra = np.degrees(ra0_r + np.arctan2(xi, denom)) % 360.0
    dec = np.degrees(np.arctan2(np.sin(dec0_r) + eta * np.cos(dec0_r), np.hypot(xi, denom)))
    return ra, dec


def vectors_to_radec(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(ra, dec)`` in degrees of (not necessarily unit) ``(n, 3)`` vectors."""
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec
