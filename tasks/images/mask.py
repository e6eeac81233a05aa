"""Mask bit planes.

Masks are ``uint32`` arrays; each pixel holds the OR of the planes that apply.

numpy 2 treats an `enum.IntFlag` member as an int64 value, so an in-place
``mask |= MaskPlane.SAT`` on a uint32 array fails; write
``mask |= MaskPlane.SAT.value`` or ``mask |= mask_bits(MaskPlane.SAT, MaskPlane.BAD)``.
Tests such as ``(mask & MaskPlane.SAT) != 0`` work as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import numpy as np

from tasks.images.errors import ImageError

__all__ = [
    "MaskPlane",
    "MASK_DTYPE",
    "bits_from_names",
    "mask_bits",
    "plane_names",
    "planes_from_names",
]

MASK_DTYPE = np.uint32


class MaskPlane(enum.IntFlag):
    """Named mask bit planes (the LSST stack's names)."""

    BAD = 1 << 0
    """Pixel is bad (bad column, dead pixel)."""
    SAT = 1 << 1
    """Pixel is saturated."""
    INTRP = 1 << 2
    """Pixel value was interpolated."""
    CR = 1 << 3
    """Pixel is affected by a cosmic ray."""
    EDGE = 1 << 4
    """Pixel is close to the edge of the image."""
    DETECTED = 1 << 5
    """Pixel is part of a positive detection footprint."""
    DETECTED_NEGATIVE = 1 << 6
    """Pixel is part of a negative detection footprint."""
    NO_DATA = 1 << 7
    """Pixel has no data (outside the parent image, not covered by a template)."""
    SUSPECT = 1 << 8
    """Pixel value is suspect (e.g. near saturation)."""


def mask_bits(*planes: MaskPlane) -> np.uint32:
    """Return the OR of ``planes`` as a `numpy.uint32` (safe to OR into a mask array)."""
    bits = 0
    for plane in planes:
        bits |= int(plane)
    return MASK_DTYPE(bits)


def plane_names() -> dict[str, int]:
    """Return plane name → bit number, as written in FITS headers."""
    return {plane.name: plane.value.bit_length() - 1 for plane in MaskPlane}


def planes_from_names(names: dict[str, int]) -> dict[int, int]:
    """Map bit numbers read from a file to the bits of `MaskPlane`.

    Parameters
    ----------
    names : `dict` [`str`, `int`]
        Plane name → bit number, as read from a file.

    Returns
    -------
    remap : `dict` [`int`, `int`]
        File bit number → our bit number, for every plane we know; unknown
        plane names are dropped.
    """
    ours = plane_names()
    return {bit: ours[name] for name, bit in names.items() if name in ours}


def bits_from_names(names: Iterable[str]) -> int:
    """Return the OR of the bits of the named planes (a config's list of plane names).

    Parameters
    ----------
    names : iterable of `str`
        `MaskPlane` names, e.g. ``["NO_DATA", "BAD"]``.

    Returns
    -------
    bits : `int`

    Raises
    ------
    tasks.images.ImageError
        Naming the first unknown plane.
    """
    bits = 0
    for name in names:
        try:
            bits |= int(MaskPlane[name])
        except KeyError:
            raise ImageError(f"unknown mask plane {name!r}") from None
    return bits
