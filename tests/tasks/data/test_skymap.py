import numpy as np
import pytest

from tasks.data.skymap import SkyMap, SkyMapConfig, SkyMapError
from tasks.images import Box2I, make_tan_wcs


def _skymap():
    return SkyMap(
        SkyMapConfig(
            tract_centers=[(150.0, -30.0), (150.3, -30.0)],
            patch_inner_size=(1000, 1000),
            patch_border=50,
            num_patches=(4, 4),
        )
    )


def test_patches_tile_the_tract_and_overlap_by_twice_the_border():
    tract = _skymap()[0]
    p0 = tract.patch_info(0)
    p1 = tract.patch_info(1)
    assert p0.index == (0, 0) and p1.index == (1, 0)
    assert p0.inner_bbox.intersection(p1.inner_bbox) is None
    assert p0.outer_bbox.intersection(p1.outer_bbox).width == 100
    assert tract.patch_info(5).index == (1, 1)
    # the tract centre lies at the middle of the inner region
    x, y = tract.sky_to_pixel(150.0, -30.0)
    assert (float(x), float(y)) == pytest.approx(tract.bbox.center)
    with pytest.raises(SkyMapError):
        tract.patch_info(16)


def test_find_patches_for_a_detector_footprint():
    skymap = _skymap()
    tract = skymap[0]
    # a 400x400 detector centred on the corner shared by patches 5, 6, 9, 10 of tract 0
    ra, dec = tract.wcs.wcs_pix2world([[2000 - 0.5, 2000 - 0.5]], 0)[0]
    wcs = make_tan_wcs(ra, dec, (200.0, 200.0), 0.2, 30.0)
    found = skymap.find_patches_for_footprint(wcs, Box2I(0, 0, 400, 400), use_outer=False)
    ids = sorted((p.tract, p.patch) for p in found)
    assert [i for i in ids if i[0] == 0] == [(0, 5), (0, 6), (0, 9), (0, 10)]
    # each reported patch really holds part of the footprint (check a dense grid of points)
    xs, ys = np.meshgrid(np.linspace(0, 399, 30), np.linspace(0, 399, 30))
    r, d = wcs.all_pix2world(xs.ravel(), ys.ravel(), 0)
    px, py = tract.sky_to_pixel(r, d)
    hit = {p.patch for p in tract.patches() if p.inner_bbox.contains(px, py).any()}
    assert hit == {5, 6, 9, 10}


def test_far_away_footprint_finds_nothing_and_yaml_round_trip():
    skymap = _skymap()
    wcs = make_tan_wcs(10.0, 40.0, (200.0, 200.0), 0.2)
    assert skymap.find_patches_for_footprint(wcs, Box2I(0, 0, 400, 400)) == []
    back = SkyMap.from_dict(skymap.to_dict())
    assert back.to_dict() == skymap.to_dict()
    np.testing.assert_array_equal(back[1].wcs.wcs.crval, skymap[1].wcs.wcs.crval)
    with pytest.raises(SkyMapError):
        SkyMap.from_dict({"tract_centers": [(1, 2)], "bogus": 3})
