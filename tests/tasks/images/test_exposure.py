import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import Sip

from tasks.images import (
    Box2I,
    DoubleGaussianPsf,
    Exposure,
    ExposureFormatError,
    ImageError,
    MaskPlane,
    PhotoCalib,
    VisitInfo,
    Weather,
    make_tan_wcs,
    mask_bits,
    params_from_hdu,
    params_to_hdu,
    register_persistable,
)
from tasks.images.visit_info import RUBIN_OBSERVATORY


@register_persistable
class _LinearApCorr:
    """A tiny aperture-correction map used to test registry round trips."""

    persistence_name = "TestLinearApCorr"

    def __init__(self, coeffs):
        self.coeffs = np.asarray(coeffs, dtype=float)

    def evaluate(self, x, y):
        return self.coeffs[0] + self.coeffs[1] * np.asarray(x) + self.coeffs[2] * np.asarray(y)

    def to_hdu(self):
        return params_to_hdu({"coeffs": self.coeffs})

    @classmethod
    def from_hdu(cls, hdu):
        return cls(params_from_hdu(hdu)["coeffs"])


def _visit_info():
    return VisitInfo(
        visit_id=1234567,
        exposure_time=30.0,
        midpoint=Time(61000.123456789012, format="mjd", scale="tai"),
        band="r",
        boresight_ra=150.1234567890123,
        boresight_dec=-30.98765432101234,
        boresight_az_alt=(123.456, 61.2345),
        airmass=1.1412345678,
        parallactic_angle=-37.1234567,
        rotator_angle=12.3456789,
        weather=Weather(8.5, 742.25, 23.5),
    )


def make_exposure(seed=1, sip=False):
    rng = np.random.default_rng(seed)
    bbox = Box2I(100, 200, 64, 48)
    wcs = make_tan_wcs(150.1234567890123, -30.98765432101234, (131.3, 223.7), 0.2, 23.4)
    if sip:
        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0] = 1.3e-7
        b[0, 2] = -7.1e-8
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.wcs.set()
    image = rng.normal(0, 10, bbox.shape).astype(np.float32)
    variance = np.full(bbox.shape, 100.0, dtype=np.float32) + rng.random(bbox.shape).astype(
        np.float32
    )
    mask = np.zeros(bbox.shape, dtype=np.uint32)
    mask[:, 5] |= MaskPlane.BAD.value
    mask[10, 10] |= mask_bits(MaskPlane.SAT, MaskPlane.SUSPECT)
    mask[-1, -1] = MaskPlane.NO_DATA
    psf = DoubleGaussianPsf(1.5, center=(132, 224), scale=32.0, gradient=(0.01, 0.02))
    return Exposure(
        image,
        mask,
        variance,
        wcs,
        bbox,
        psf=psf,
        photo_calib=PhotoCalib(57.123456789, 0.3456),
        visit_info=_visit_info(),
        detector=42,
        ap_corr_map=_LinearApCorr([0.98, 1e-5, -2e-5]),
    )


@pytest.mark.parametrize("sip", [False, True])
def test_fits_round_trip_is_lossless(tmp_path, sip):
    exp = make_exposure(sip=sip)
    path = tmp_path / "exp.fits"
    exp.write_fits(path)
    back = Exposure.read_fits(path)
    assert back.bbox == exp.bbox
    for name in ("image", "mask", "variance"):
        a, b = getattr(exp, name), getattr(back, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert back.psf == exp.psf
    assert back.photo_calib == exp.photo_calib
    assert back.visit_info == exp.visit_info
    assert back.visit_info.midpoint.scale == "tai"
    assert back.visit_info.observatory == RUBIN_OBSERVATORY
    assert back.detector == 42 and back.band == "r"
    np.testing.assert_array_equal(back.ap_corr_map.coeffs, exp.ap_corr_map.coeffs)
    # the parent WCS maps pixels to the sky bit for bit
    x, y = exp.bbox.pixel_grid()
    ra0, dec0 = exp.pixel_to_sky(x.ravel(), y.ravel())
    ra1, dec1 = back.pixel_to_sky(x.ravel(), y.ravel())
    np.testing.assert_array_equal(ra0, ra1)
    np.testing.assert_array_equal(dec0, dec1)
    # the image header holds the array WCS, for FITS viewers
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        viewer = WCS(hdul["IMAGE"].header)
    rav, decv = viewer.all_pix2world([0.0, 10.0], [0.0, 5.0], 0)
    ra_p, dec_p = exp.pixel_to_sky([100.0, 110.0], [200.0, 205.0])
    np.testing.assert_allclose(rav, ra_p, atol=1e-9)
    np.testing.assert_allclose(decv, dec_p, atol=1e-9)


def test_sky_pixel_round_trip_and_array_wcs():
    exp = make_exposure()
    x = np.array([100.0, 130.5, 163.0])
    y = np.array([200.0, 220.25, 247.0])
    ra, dec = exp.pixel_to_sky(x, y)
    x2, y2 = exp.sky_to_pixel(ra, dec)
    np.testing.assert_allclose(x2, x, atol=1e-8)
    np.testing.assert_allclose(y2, y, atol=1e-8)
    aw = exp.array_wcs()
    ra_a, dec_a = aw.all_pix2world(x - 100, y - 200, 0)
    np.testing.assert_allclose(ra_a, ra, atol=1e-11)
    np.testing.assert_allclose(dec_a, dec, atol=1e-11)


def test_cutout_keeps_parent_coordinates_and_pads_outside():
    exp = make_exposure()
    cut = exp.get_cutout((102.2, 210.7), (9, 7))
    assert cut.bbox == Box2I(98, 208, 9, 7)
    assert cut.wcs is exp.wcs and cut.psf is exp.psf and cut.visit_info is exp.visit_info
    # columns x=98, 99 lie outside the parent
    assert np.all(np.isnan(cut.image[:, :2])) and np.all(cut.mask[:, :2] == MaskPlane.NO_DATA)
    rows, cols = exp.bbox.slices(Box2I(100, 208, 7, 7))
    np.testing.assert_array_equal(cut.image[:, 2:], exp.image[rows, cols])
    np.testing.assert_array_equal(cut.mask[:, 2:], exp.mask[rows, cols])
    # sky centre gives the same cutout
    ra, dec = exp.pixel_to_sky(130.0, 220.0)
    sky_cut = exp.get_cutout(SkyCoord(ra, dec, unit="deg"), (11, 11))
    assert sky_cut.bbox == Box2I(125, 215, 11, 11)
    far = exp.get_cutout((1000.0, 1000.0), (5, 5))
    assert np.all(far.mask == MaskPlane.NO_DATA)
    with pytest.raises(ImageError):
        exp.get_cutout((1.0, 2.0), (0, 3))


def test_constructor_validates_shapes():
    with pytest.raises(ImageError):
        Exposure(np.zeros((4, 4), np.float32), None, np.zeros((4, 5), np.float32), None)
    with pytest.raises(ImageError):
        Exposure(np.zeros((4, 4), np.int32), None, np.zeros((4, 4), np.float32), None)
    with pytest.raises(ImageError):
        Exposure(
            np.zeros((4, 4), np.float32),
            None,
            np.zeros((4, 4), np.float32),
            None,
            Box2I(0, 0, 3, 4),
        )


def test_corrupt_or_foreign_files_raise(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(ExposureFormatError):
        Exposure.read_fits(bad)
    foreign = tmp_path / "foreign.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(foreign)
    with pytest.raises(ExposureFormatError):
        Exposure.read_fits(foreign)
    with pytest.raises(ExposureFormatError):
        Exposure.read_fits(tmp_path / "missing.fits")


def test_photo_calib_conversions():
    calib = PhotoCalib(2.0, 0.1)
    flux, err = calib.instflux_to_nanojansky(np.array([10.0, 20.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(flux, [20.0, 40.0])
    np.testing.assert_allclose(err, np.hypot([2.0, 4.0], [1.0, 2.0]))
    np.testing.assert_allclose(calib.image_to_nanojansky(np.ones((2, 2))), 2.0)
    with pytest.raises(ImageError):
        PhotoCalib(0.0)
