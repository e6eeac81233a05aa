"""Instrument profiles: DECam-like multi-extension files, our own exposures, bad profiles."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from tasks.images import MaskPlane
from tasks.images.wcs_utils import make_tan_wcs
from tasks.ingest.errors import IngestError
from tasks.ingest.fits_ingest import read_image
from tasks.ingest.profiles import load_profile, shipped_profiles


def test_shipped_profiles_load():
    assert shipped_profiles() == ["decam", "generic", "ours", "ztf"]
    for name in shipped_profiles():
        assert load_profile(name).name == name


def _decam_like(tmp_path):
    """A DECam Community Pipeline triple: ooi image, oow inverse variance, ood mask codes."""
    rng = np.random.default_rng(3)
    shape = (200, 150)
    wcs = make_tan_wcs(150.1, -2.2, (75.0, 100.0), 0.263)
    primary = fits.Header()
    primary["MJD-OBS"] = 59000.1
    primary["EXPTIME"] = 90.0
    primary["FILTER"] = "r DECam SDSS c0002 6415.0 1480.0"
    primary["TELRA"] = "10:00:24.000"
    primary["TELDEC"] = "-02:12:00.00"
    primary["AIRMASS"] = 1.3
    primary["EXPNUM"] = 912345
    primary["MAGZERO"] = 31.4  # 1 nJy per unit
    ext = wcs.to_header()
    ext["CCDNUM"] = 35
    ext["EXTNAME"] = "S4"
    weight = np.full(shape, 1.0 / 25.0, dtype=np.float32)
    image = rng.normal(0, 5, shape).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for x, y in rng.uniform(20, 130, (12, 2)):  # stars with a Gaussian PSF, sigma 1.7 px
        image += (
            2e4 / (2 * np.pi * 1.7**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.7**2))
        ).astype(np.float32)
    code = np.zeros(shape, dtype=np.int16)
    code[10, 20] = 3  # saturated
    code[50:52, :] = 1  # bad rows
    paths = {}
    for name, data in (("ooi", image), ("oow", weight), ("ood", code)):
        path = tmp_path / f"c4d_{name}.fits.fz"[:-3]
        fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, header=ext)]).writeto(
            path
        )
        paths[name] = path
    return paths, image


def test_decam_profile_reads_a_community_pipeline_triple(tmp_path):
    paths, image = _decam_like(tmp_path)
    exposure = read_image(
        paths["ooi"],
        load_profile("decam"),
        mask_path=paths["ood"],
        variance_path=paths["oow"],
        hdu="S4",
    )
    info = exposure.visit_info
    assert info.visit_id == 912345 and exposure.detector == 35 and info.band == "r"
    assert info.boresight_ra == pytest.approx(150.1) and info.boresight_dec == pytest.approx(-2.2)
    expected_mid = Time(59000.1, format="mjd", scale="utc").tai.mjd + 45 / 86400
    assert info.midpoint_mjd_tai == pytest.approx(expected_mid, abs=1e-9)
    assert info.airmass == pytest.approx(1.3)
    np.testing.assert_allclose(exposure.variance, 25.0)
    np.testing.assert_array_equal(exposure.image, image)
    assert exposure.mask[10, 20] & MaskPlane.BAD and exposure.mask[50, 3] & MaskPlane.BAD
    assert not exposure.mask[100, 100]
    assert exposure.photo_calib.calibration_mean == pytest.approx(1.0)
    # no FWHM keyword: the PSF width is measured from the stars
    assert exposure.psf.sigma(75, 100) == pytest.approx(1.7, rel=0.05)
    ra, dec = exposure.wcs.all_pix2world([75.0], [100.0], 0)
    assert (ra[0], dec[0]) == pytest.approx((150.1, -2.2))


def test_our_profile_reads_our_exposures(tmp_path):
    from tasks.simulate.quick import make_exposure_with_sources

    exposure = make_exposure_with_sources()[0]
    path = tmp_path / "e.fits"
    exposure.write_fits(path)
    again = read_image(path, load_profile("ours"))
    np.testing.assert_array_equal(again.image, exposure.image)
    assert again.visit_info == exposure.visit_info


def test_bad_profiles_and_files_are_our_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nunknown_key: 1\n")
    with pytest.raises(IngestError, match="bad instrument profile"):
        load_profile(bad)
    paths, _ = _decam_like(tmp_path)
    with pytest.raises(IngestError, match="no image HDU 'S9'"):
        read_image(paths["ooi"], load_profile("decam"), hdu="S9")
    with pytest.raises(IngestError, match="not in the profile's bands"):
        profile = load_profile("decam").model_copy(update={"bands": {"g": "g"}})
        read_image(paths["ooi"], profile, variance_path=paths["oow"], hdu="S4")
