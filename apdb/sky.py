"""HEALPix sky index and sky regions (the only module that imports healpy).

Every stored row carries ``pixelId``, the HEALPix NESTED index of its (ra, dec)
at a fine order (29 by default, as in HATS/LSDB).  A region query runs in two
phases:

1. a coarse cover of the region by HEALPix pixels at an order chosen from the
   region's size, so that the cover becomes at most ``max_ranges`` contiguous
   ``pixelId BETWEEN lo AND hi`` ranges (adjacent pixels merged);
2. an exact angular filter of the returned rows (`Region.contains`).

healpy is only ever queried at coarse orders: ``query_disc(inclusive=True)``
at very fine orders aborts the process.  It is imported on first use (it
pulls in matplotlib, seconds of start-up that commands like ``apdb info``
do not need).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from apdb.errors import InvalidRegionError

__all__ = [
    "Cone",
    "Polygon",
    "Region",
    "footprint_region",
    "pixel_index",
    "pixels_to_ranges",
    "unit_vectors",
]

_ORDER0_SIDE_DEG = 58.6  # side of an order-0 HEALPix pixel, roughly
_MAX_HEALPY_ORDER = 29


def _hp():
    import healpy

    return healpy


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Return unit vectors, shape ``(n, 3)``, of ``(ra, dec)`` in degrees."""
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def _to_radec(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vec = np.asarray(vec, dtype=np.float64)
    ra = np.degrees(np.arctan2(vec[..., 1], vec[..., 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(vec[..., 2] / np.linalg.norm(vec, axis=-1), -1, 1)))
    return ra, dec


def pixel_index(ra: np.ndarray, dec: np.ndarray, order: int = 29) -> np.ndarray:
    """HEALPix NESTED pixel index of each position.

    Parameters
    ----------
    ra, dec : array-like
        Coordinates in degrees (finite).
    order : `int`, optional
        HEALPix order (``nside = 2**order``), at most 29.

    Returns
    -------
    pixels : `numpy.ndarray` of int64
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    if ra.size == 0:
        return np.zeros(ra.shape, dtype=np.int64)
    return _hp().ang2pix(1 << order, ra, dec, nest=True, lonlat=True).astype(np.int64)


def pixels_to_ranges(pixels: np.ndarray, order: int, index_order: int = 29) -> np.ndarray:
    """Turn pixels at ``order`` into merged inclusive ranges at ``index_order``.

    Parameters
    ----------
    pixels : `numpy.ndarray`
        NESTED pixel numbers at ``order``.
    order : `int`
        Order of ``pixels``.
    index_order : `int`, optional
        Order of the indexed column.

    Returns
    -------
    ranges : `numpy.ndarray`, shape ``(n, 2)``, int64
        ``[lo, hi]`` inclusive, sorted, non-adjacent.
    """
    pix = np.unique(np.asarray(pixels, dtype=np.int64))
    if pix.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(pix) != 1) + 1
    starts = pix[np.concatenate([[0], breaks])]
    ends = pix[np.concatenate([breaks - 1, [pix.size - 1]])]
    shift = 2 * (index_order - order)
    return np.stack([starts << shift, ((ends + 1) << shift) - 1], axis=1).astype(np.int64)


class Region(ABC):
    """A region of the sky."""

    @abstractmethod
    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Exact test: boolean array, True where (ra, dec) (degrees) is inside."""

    @abstractmethod
    def cover_pixels(self, order: int) -> np.ndarray:
        """HEALPix NESTED pixels at ``order`` that together cover the region."""

    @property
    @abstractmethod
    def size_deg(self) -> float:
        """A characteristic size (diameter) of the region in degrees."""

    def ranges(
        self, index_order: int = 29, max_ranges: int = 64, max_order: int = 16
    ) -> np.ndarray:
        """Return merged ``pixelId`` ranges covering the region.

        The cover order starts where a pixel is about 1/32 of the region's size
        and is lowered until the cover fits in ``max_ranges`` ranges.

        Returns
        -------
        ranges : `numpy.ndarray`, shape ``(n, 2)``
            Inclusive ``[lo, hi]`` pairs at ``index_order``.
        """
        size = max(self.size_deg, 1e-6)
        order = int(math.floor(math.log2(_ORDER0_SIDE_DEG * 32.0 / size)))
        order = max(0, min(order, max_order, index_order))
        while True:
            ranges = pixels_to_ranges(self.cover_pixels(order), order, index_order)
            if len(ranges) <= max_ranges or order == 0:
                return ranges
            order -= 1


class Cone(Region):
    """A circle on the sky.

    Parameters
    ----------
    ra, dec : `float`
        Centre, degrees.
    radius : `float`
        Radius, degrees (``0 < radius < 90``).
    """

    def __init__(self, ra: float, dec: float, radius: float):
        if not (np.isfinite(ra) and np.isfinite(dec) and -90.0 <= dec <= 90.0):
            raise InvalidRegionError(f"bad cone centre ({ra}, {dec})")
        if not (np.isfinite(radius) and 0.0 < radius < 90.0):
            raise InvalidRegionError(f"cone radius {radius} deg is not in (0, 90)")
        self.ra = float(ra) % 360.0
        self.dec = float(dec)
        self.radius = float(radius)
        self._vec = unit_vectors(self.ra, self.dec)

    def __repr__(self) -> str:
        return f"Cone(ra={self.ra}, dec={self.dec}, radius={self.radius})"

    @property
    def size_deg(self) -> float:
        """Diameter in degrees."""
        return 2.0 * self.radius

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Return True where the angular distance to the centre is within the radius."""
        return unit_vectors(ra, dec) @ self._vec >= math.cos(math.radians(self.radius))

    def cover_pixels(self, order: int) -> np.ndarray:
        """Pixels at ``order`` overlapping the cone."""
        return _hp().query_disc(
            1 << order, self._vec, math.radians(self.radius), inclusive=True, nest=True
        )


class Polygon(Region):
    """A convex spherical polygon, optionally padded by a margin.

    Parameters
    ----------
    ra, dec : sequence of `float`
        Vertices in degrees, in order (either orientation), at least three.
    margin : `float`, optional
        Padding in degrees: points within ``margin`` of the polygon are inside.
    """

    def __init__(self, ra: Sequence[float], dec: Sequence[float], margin: float = 0.0):
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if ra.shape != dec.shape or ra.ndim != 1 or ra.size < 3:
            raise InvalidRegionError("a polygon needs at least three (ra, dec) vertices")
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise InvalidRegionError("polygon vertices must be finite")
        if np.any(np.abs(dec) > 90.0):
            raise InvalidRegionError("polygon vertex dec outside [-90, 90]")
        if not (np.isfinite(margin) and 0.0 <= margin < 10.0):
            raise InvalidRegionError(f"polygon margin {margin} deg is not in [0, 10)")
        verts = unit_vectors(ra, dec)
        normals = np.cross(verts, np.roll(verts, -1, axis=0))
        centre = verts.sum(axis=0)
        if np.linalg.norm(centre) < 1e-12:
            raise InvalidRegionError("degenerate polygon")
        # Orient edges counter-clockwise around the centre.
        if np.mean(normals @ centre) < 0:
            verts = verts[::-1]
            normals = np.cross(verts, np.roll(verts, -1, axis=0))
        lengths = np.linalg.norm(normals, axis=1)
        if np.any(lengths < 1e-15):
            raise InvalidRegionError("polygon has repeated vertices")
        normals = normals / lengths[:, None]
        # Convex: every vertex is on the inner side of every edge.
        if np.any(verts @ normals.T < -1e-12):
            raise InvalidRegionError("polygon is not convex")
        self.vertices = verts
        self.normals = normals
        self.margin = float(margin)
        self._centre = centre / np.linalg.norm(centre)

    def __repr__(self) -> str:
        ra, dec = _to_radec(self.vertices)
        return f"Polygon(ra={ra.tolist()}, dec={dec.tolist()}, margin={self.margin})"

    @property
    def size_deg(self) -> float:
        """Largest vertex distance from the centre, times two, plus the margin."""
        cos = np.clip(self.vertices @ self._centre, -1.0, 1.0)
        return 2.0 * (float(np.degrees(np.arccos(cos.min()))) + self.margin)

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Return True for points inside the polygon or within the margin of it."""
        p = unit_vectors(ra, dec).reshape(-1, 3)
        side = p @ self.normals.T  # sin(distance) to each edge's great circle
        inside = np.all(side >= 0.0, axis=1)
        if self.margin <= 0.0:
            return inside.reshape(np.shape(ra))
        sin_m = math.sin(math.radians(self.margin))
        cos_m = math.cos(math.radians(self.margin))
        near = np.any(p @ self.vertices.T >= cos_m, axis=1)
        # Distance to each edge arc: the perpendicular foot must lie on the arc.
        nxt = np.roll(self.vertices, -1, axis=0)
        for k in range(len(self.vertices)):
            a, b, n = self.vertices[k], nxt[k], self.normals[k]
            s = side[:, k]
            close = (s < 0) & (s >= -sin_m)
            foot = p - s[:, None] * n
            on_arc = (np.cross(a, foot) @ n >= 0) & (np.cross(foot, b) @ n >= 0)
            near |= close & on_arc
        return (inside | near).reshape(np.shape(ra))

    def _padded_vertices(self) -> np.ndarray:
        """Vertices moved outwards so that the polygon contains the margin."""
        if self.margin <= 0.0:
            return self.vertices
        out = []
        n = len(self.vertices)
        for k, v in enumerate(self.vertices):
            prev, nxt = self.vertices[k - 1], self.vertices[(k + 1) % n]
            t1 = prev - (prev @ v) * v
            t2 = nxt - (nxt @ v) * v
            t1 /= np.linalg.norm(t1)
            t2 /= np.linalg.norm(t2)
            half = 0.5 * math.acos(float(np.clip(t1 @ t2, -1.0, 1.0)))
            bis = t1 + t2
            bis /= np.linalg.norm(bis)
            d = math.radians(self.margin) * 1.05 / max(math.sin(half), 0.05)
            out.append(math.cos(d) * v - math.sin(d) * bis)
        return np.array(out)

    def cover_pixels(self, order: int) -> np.ndarray:
        """Pixels at ``order`` overlapping the (padded) polygon."""
        return _hp().query_polygon(1 << order, self._padded_vertices(), inclusive=True, nest=True)


def footprint_region(wcs, bbox, margin_arcsec: float = 20.0) -> Polygon:
    """Return the sky footprint of an image, padded by a margin.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        Maps parent pixel coordinates (0-based x, y) to ICRS (ra, dec) degrees.
    bbox : `tuple` or box
        ``(xmin, ymin, xmax, ymax)``: inclusive pixel-centre bounds in parent
        coordinates (the image edges are half a pixel further out), or an
        object with ``x0, y0, x1, y1`` attributes (e.g. ``tasks.images.Box2I``).
    margin_arcsec : `float`, optional
        Padding in arcseconds.

    Returns
    -------
    region : `Polygon`
    """
    if all(hasattr(bbox, a) for a in ("x0", "y0", "x1", "y1")):
        xmin, ymin, xmax, ymax = bbox.x0, bbox.y0, bbox.x1, bbox.y1
    else:
        xmin, ymin, xmax, ymax = (float(v) for v in bbox)
    if not (xmax >= xmin and ymax >= ymin):
        raise InvalidRegionError(f"empty bbox {bbox}")
    x0, x1, y0, y1 = xmin - 0.5, xmax + 0.5, ymin - 0.5, ymax + 0.5
    xs = np.array([x0, x1, x1, x0, 0.5 * (x0 + x1), x1, 0.5 * (x0 + x1), x0])
    ys = np.array([y0, y0, y1, y1, y0, 0.5 * (y0 + y1), y1, 0.5 * (y0 + y1)])
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise InvalidRegionError("the WCS does not map the bbox corners to the sky")
    poly = Polygon(ra[:4], dec[:4])
    # Curved edges (distortion): widen the margin by how far edge midpoints
    # stray outside the great-circle edges.
    side = unit_vectors(ra[4:], dec[4:]) @ poly.normals.T
    bulge = max(0.0, float(-np.min(side)))
    margin = margin_arcsec / 3600.0 + math.degrees(math.asin(min(bulge, 1.0)))
    return Polygon(ra[:4], dec[:4], margin=margin)
