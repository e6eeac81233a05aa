"""HEALPix sky index and regions: covers contain every inside point, exact filters are exact."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from apdb.errors import InvalidRegionError
from apdb.sky import Cone, Polygon, footprint_region, pixel_index, pixels_to_ranges


def _in_ranges(pix, ranges):
    idx = np.searchsorted(ranges[:, 0], pix, side="right") - 1
    return (idx >= 0) & (pix <= ranges[np.maximum(idx, 0), 1])


def _angsep(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def _wcs(ra, dec, scale_arcsec=0.2, rot_deg=30.0, size=4000):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [size / 2, size / 2]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    scale = scale_arcsec / 3600.0
    w.wcs.cd = scale * np.array([[-c, s], [s, c]])
    return w


def test_pixel_index_is_nested_order29_and_hierarchical():
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, 1000), np.degrees(np.arcsin(rng.uniform(-1, 1, 1000)))
    fine = pixel_index(ra, dec, 29)
    coarse = pixel_index(ra, dec, 10)
    assert fine.dtype == np.int64
    np.testing.assert_array_equal(fine >> (2 * 19), coarse)
    assert fine.max() < 12 * 4**29


def test_ranges_merge_adjacent_pixels():
    ranges = pixels_to_ranges(np.array([5, 3, 4, 9]), order=1, index_order=2)
    np.testing.assert_array_equal(ranges, [[12, 23], [36, 39]])


@pytest.mark.parametrize("radius", [0.001, 0.05, 0.5, 5.0])
@pytest.mark.parametrize(("ra", "dec"), [(10.0, -30.0), (359.99, 0.0), (45.0, 89.9)])
def test_cone_cover_and_exact_filter(ra, dec, radius):
    rng = np.random.default_rng(1)
    cone = Cone(ra, dec, radius)
    # Points in and around the cone.
    r = 1.5 * radius * np.sqrt(rng.uniform(0, 1, 20000))
    phi = rng.uniform(0, 2 * np.pi, 20000)
    # Points scattered around the centre; the truth is their angular separation.
    pdec = np.clip(dec + r * np.sin(phi), -90, 90)
    pra = (ra + r * np.cos(phi) / np.maximum(np.cos(np.radians(pdec)), 1e-3)) % 360
    truth = _angsep(pra, pdec, ra, dec) <= radius
    np.testing.assert_array_equal(cone.contains(pra, pdec), truth)
    ranges = cone.ranges()
    assert 0 < len(ranges) <= 64
    assert _in_ranges(pixel_index(pra, pdec), ranges)[truth].all()


def test_footprint_with_margin_matches_pixel_truth():
    wcs = _wcs(150.0, 2.0)
    region = footprint_region(wcs, (0, 0, 3999, 3999), margin_arcsec=20.0)
    rng = np.random.default_rng(2)
    ra = 150.0 + rng.uniform(-0.6, 0.6, 200000)
    dec = 2.0 + rng.uniform(-0.6, 0.6, 200000)
    x, y = wcs.world_to_pixel_values(ra, dec)
    margin_px = 20.0 / 0.2
    inside = (x >= -0.5) & (x <= 3999.5) & (y >= -0.5) & (y <= 3999.5)
    # Distance outside the image edge, in pixels (0 inside).
    dx = np.maximum(np.maximum(-0.5 - x, x - 3999.5), 0)
    dy = np.maximum(np.maximum(-0.5 - y, y - 3999.5), 0)
    dist = np.hypot(dx, dy)
    got = region.contains(ra, dec)
    assert got[inside].all()
    assert got[dist < margin_px - 1].all()
    assert not got[dist > margin_px + 1].any()
    ranges = region.ranges()
    assert len(ranges) <= 64
    assert _in_ranges(pixel_index(ra, dec), ranges)[got].all()
    # The cover is not much bigger than the region (few rows read in vain).
    covered = _in_ranges(pixel_index(ra, dec), ranges)
    assert covered.sum() < 1.5 * got.sum()


def test_footprint_accepts_box_objects():
    class Box:
        x0, y0, x1, y1 = 0, 0, 99, 49

    wcs = _wcs(20.0, -10.0, size=100)
    a = footprint_region(wcs, Box(), margin_arcsec=0.0)
    b = footprint_region(wcs, (0, 0, 99, 49), margin_arcsec=0.0)
    np.testing.assert_allclose(a.vertices, b.vertices)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Cone(0, 0, 0),
        lambda: Cone(0, 100, 1),
        lambda: Cone(np.nan, 0, 1),
        lambda: Polygon([0, 1], [0, 1]),
        lambda: Polygon([0, 1, 1, 0.5, 0], [0, 0, 1, 0.2, 1]),  # not convex
        lambda: Polygon([0, 0, 0], [0, 0, 0]),
        lambda: footprint_region(_wcs(0, 0), (10, 10, 5, 5)),
    ],
)
def test_bad_regions_raise(make):
    with pytest.raises(InvalidRegionError):
        make()
