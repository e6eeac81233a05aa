import math

import numpy as np
import pytest

from tasks.images import make_tan_wcs, shift_wcs, sky_direction_in_pixels
from tasks.images.wcs_utils import offset_sky, params_to_wcs, pixel_scale_arcsec, wcs_to_params
from tasks.simulate.quick import make_visit_info


@pytest.mark.parametrize("rotation", [0.0, 37.0, -120.0])
def test_tan_wcs_orientation_scale_and_parity(rotation):
    wcs = make_tan_wcs(150.0, -30.0, (100.0, 50.0), 0.2, rotation)
    assert pixel_scale_arcsec(wcs, 100.0, 50.0) == pytest.approx(0.2, rel=1e-6)
    ra, dec = wcs.all_pix2world([100.0], [50.0], 0)
    assert (ra[0], dec[0]) == pytest.approx((150.0, -30.0))
    # +y points to position angle `rotation`, +x to `rotation - 90` (east-left parity)
    assert sky_direction_in_pixels(wcs, 100, 50, rotation) == pytest.approx((0.0, 1.0), abs=1e-6)
    assert sky_direction_in_pixels(wcs, 100, 50, rotation - 90) == pytest.approx(
        (1.0, 0.0), abs=1e-6
    )


def test_visit_zenith_direction_matches_the_wcs():
    info = make_visit_info(parallactic_angle=63.0, rotator_angle=-21.0)
    wcs = make_tan_wcs(info.boresight_ra, info.boresight_dec, (0, 0), 0.2, info.rotator_angle)
    direct = sky_direction_in_pixels(wcs, 0, 0, info.parallactic_angle)
    assert info.zenith_direction_on_detector() == pytest.approx(direct, abs=1e-6)


def test_offset_sky_is_a_great_circle_step():
    ra, dec = offset_sky(np.array([10.0]), np.array([89.9]), 90.0, 3600.0)
    cos_d = np.sin(np.radians(89.9)) * np.sin(np.radians(dec)) + np.cos(np.radians(89.9)) * np.cos(
        np.radians(dec)
    ) * np.cos(np.radians(ra - 10.0))
    assert math.degrees(math.acos(cos_d[0])) == pytest.approx(1.0, rel=1e-9)


def test_shift_and_exact_params_round_trip():
    wcs = make_tan_wcs(1.0 / 3.0, -2.0 / 7.0, (12.345, 67.89), 0.2, 11.0)
    shifted = shift_wcs(wcs, 10, -5)
    a = wcs.all_pix2world([15.0], [20.0], 0)
    b = shifted.all_pix2world([5.0], [25.0], 0)
    np.testing.assert_allclose(a, b, atol=1e-12)
    back = params_to_wcs(wcs_to_params(wcs))
    np.testing.assert_array_equal(back.wcs.crval, wcs.wcs.crval)
    np.testing.assert_array_equal(back.wcs.cd, wcs.wcs.cd)
