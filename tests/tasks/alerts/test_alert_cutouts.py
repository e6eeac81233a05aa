"""Cutout geometry, local WCS and the FITS bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, VarianceUncertainty
from astropy.wcs import WCS

from tasks.alerts.cutouts import cutout_sizes, gnomonic, local_transform_matrices
from tasks.alerts.fits_bytes import LinearWcs, ccd_fits_bytes
from tasks.images import make_tan_wcs


def test_sizes_are_clamped():
    np.testing.assert_array_equal(
        cutout_sizes([1, 30, 45.2, 102, 500, np.nan], 30, 102), [30, 30, 46, 102, 102, 30]
    )


@pytest.mark.parametrize("dec", [0.0, 60.0, -89.0])
def test_local_wcs_reproduces_the_parent_wcs(dec):
    wcs = make_tan_wcs(200.0, dec, (2000.0, 2000.0), 0.2, rotation_deg=37.0)
    x, y = np.array([10.0, 3500.0]), np.array([4000.0, 1234.5])  # far from the tangent point
    ra0, dec0 = wcs.all_pix2world(x, y, 0)
    cd = local_transform_matrices(wcs, x, y, ra0, dec0)
    for k in range(2):
        local = LinearWcs((ra0[k], dec0[k]), (1.0, 1.0), cd[k])
        lw = WCS(fits.Header.fromstring(local.header_text, sep=""))
        # pixel offsets within a 102-pixel cutout: same sky position to < 0.1 mas
        dx, dy = np.meshgrid(np.arange(-51, 52, 17.0), np.arange(-51, 52, 17.0))
        ra_p, dec_p = wcs.all_pix2world(x[k] + dx.ravel(), y[k] + dy.ravel(), 0)
        ra_l, dec_l = lw.all_pix2world(dx.ravel(), dy.ravel(), 0)
        xi, eta = gnomonic(ra_l, dec_l, ra_p, dec_p)
        assert np.max(np.hypot(xi, eta)) * 3.6e6 < 0.1


def test_fits_bytes_read_back_with_astropy():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(30, 44)).astype(np.float32)
    variance = rng.uniform(1, 2, size=(30, 44)).astype(np.float32)
    mask = rng.uniform(size=(30, 44)) > 0.9
    wcs = LinearWcs(
        (359.999999, -89.5), (15.25, 22.0), np.array([[-5.5e-5, 1.1e-6], [1e-6, 5.5e-5]])
    )
    data = ccd_fits_bytes(image, variance, mask, wcs, meta={"CUTMINX": -4, "CUTMINY": 7})
    assert len(data) % 2880 == 0
    with fits.open(io.BytesIO(data)) as hdus:
        hdus.verify("exception")
        assert [h.name for h in hdus] == ["PRIMARY", "MASK", "UNCERT"]
    ccd = CCDData.read(io.BytesIO(data), format="fits")
    np.testing.assert_array_equal(ccd.data, image)
    np.testing.assert_array_equal(ccd.mask, mask)
    assert isinstance(ccd.uncertainty, VarianceUncertainty)
    np.testing.assert_array_equal(ccd.uncertainty.array, variance)
    np.testing.assert_allclose(ccd.wcs.wcs.crval, wcs.crval, rtol=1e-14)
    np.testing.assert_allclose(ccd.wcs.pixel_scale_matrix, wcs.cd, rtol=1e-12)
    assert ccd.meta["CUTMINX"] == -4
    # the same data written by astropy itself reads back identically
    ref = io.BytesIO()
    CCDData(image, unit="nJy", uncertainty=VarianceUncertainty(variance), mask=mask).write(
        ref, format="fits"
    )
    ref_ccd = CCDData.read(io.BytesIO(ref.getvalue()), format="fits")
    np.testing.assert_array_equal(ref_ccd.data, ccd.data)
    assert ref_ccd.unit == ccd.unit
