"""Warping patch templates onto a detector, and GetDcrTemplateTask end to end."""

import numpy as np
import pytest
from astropy.time import Time

from tasks.core.base import NoWorkFound
from tasks.dcr.errors import EmptyPatchError, MissingSubfilterError
from tasks.dcr.get_template import CoaddRef, GetDcrTemplateTask
from tasks.dcr.warp import pixel_mapping, warp_exposure
from tasks.images import (
    Box2I,
    Exposure,
    GaussianPsf,
    MaskPlane,
    PhotoCalib,
    VisitInfo,
    Weather,
    make_tan_wcs,
)

SCALE = 0.2
SIGMA = 1.8
RA0, DEC0 = 150.0, -30.0


def sky_sources(n=150, seed=11):
    rng = np.random.default_rng(seed)
    # within ~50" of the tangent point
    ra = RA0 + rng.uniform(-60, 60, n) / 3600 / np.cos(np.radians(DEC0))
    dec = DEC0 + rng.uniform(-60, 60, n) / 3600
    return ra, dec, rng.uniform(1e3, 1e4, n)


def render(wcs, bbox, ra, dec, flux, sigma=SIGMA):
    x, y = wcs.all_world2pix(ra, dec, 0)
    image = np.zeros(bbox.shape)
    for xi, yi, fi in zip(x - bbox.x0, y - bbox.y0, flux, strict=True):
        i0, j0 = max(int(yi) - 15, 0), max(int(xi) - 15, 0)
        i1, j1 = min(int(yi) + 16, bbox.height), min(int(xi) + 16, bbox.width)
        if i1 <= i0 or j1 <= j0:
            continue
        yy, xx = np.mgrid[i0:i1, j0:j1]
        image[i0:i1, j0:j1] += (
            fi
            / (2 * np.pi * sigma**2)
            * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2))
        )
    return image


def make_patch(crpix, bbox, rotation=0.0, variance=1.0, calib=1.0, n_sub=3):
    wcs = make_tan_wcs(RA0, DEC0, crpix, SCALE, rotation)
    ra, dec, flux = sky_sources()
    image = render(wcs, bbox, ra, dec, flux / calib) / n_sub
    return [
        Exposure(
            image.astype(np.float32),
            None,
            np.full(bbox.shape, variance / n_sub, np.float32),
            wcs,
            bbox,
            psf=GaussianPsf(SIGMA),
            photo_calib=PhotoCalib(calib),
            band="r",
        )
        for _ in range(n_sub)
    ]


def visit_at_zenith():
    return VisitInfo(
        visit_id=7,
        exposure_time=30.0,
        midpoint=Time(60000.0, format="mjd", scale="tai"),
        band="r",
        boresight_ra=RA0,
        boresight_dec=DEC0,
        boresight_az_alt=(0.0, 90.0),
        airmass=1.0,
        parallactic_angle=0.0,
        rotator_angle=0.0,
        weather=Weather(10.0, 744.0, 40.0),
    )


def detector():
    bbox = Box2I(0, 0, 300, 260)
    wcs = make_tan_wcs(RA0, DEC0, (150.0, 130.0), SCALE, rotation_deg=33.0)
    return bbox, wcs


def two_patches(**kwargs):
    """Two overlapping patches (tract 0: patches 1 and 2) on one tangent plane."""
    refs = []
    for patch, x0 in ((1, 0), (2, 300)):
        bbox = Box2I(x0, 0, 500, 700)
        for sub, exp in enumerate(make_patch((400.0, 350.0), bbox, **kwargs)):
            refs.append(CoaddRef.from_exposure(exp, {"tract": 0, "patch": patch, "subfilter": sub}))
    return refs


def test_pixel_mapping_matches_the_exact_transform():
    bbox, wcs = detector()
    src = make_tan_wcs(RA0 + 0.001, DEC0, (400.0, 350.0), 0.21, rotation_deg=-10.0)
    sx, sy = pixel_mapping(wcs, bbox, src, spacing=64, tolerance=0.005)
    xx, yy = bbox.pixel_grid()
    ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    ex, ey = src.all_world2pix(ra, dec, 0)
    assert np.max(np.hypot(sx.ravel() - ex, sy.ravel() - ey)) < 0.005


def test_warp_reproduces_direct_rendering():
    bbox, wcs = detector()
    patch = make_patch((400.0, 350.0), Box2I(0, 0, 800, 700), rotation=-20.0, n_sub=1)[0]
    warped = warp_exposure(patch, wcs, bbox)
    truth = render(wcs, bbox, *sky_sources())
    assert not np.any((warped.mask & MaskPlane.NO_DATA) != 0)
    resid = warped.image - truth
    # Lanczos-3 interpolation of a sigma=1.8 px PSF: < 1 % of the peak
    peak = truth.max()
    assert np.max(np.abs(resid)) < 0.01 * peak
    assert warped.image.sum() == pytest.approx(truth.sum(), rel=1e-3)
    np.testing.assert_allclose(warped.variance, 1.0, rtol=1e-5)
    assert warped.psf == patch.psf


def test_warp_marks_uncovered_and_missing_pixels_no_data():
    bbox, wcs = detector()
    patch = make_patch((400.0, 350.0), Box2I(300, 0, 500, 700), n_sub=1)[0]
    patch.image[300:310, 100:110] = np.nan  # parent x 400-409, y 300-309
    warped = warp_exposure(patch, wcs, bbox)
    no_data = (warped.mask & MaskPlane.NO_DATA) != 0
    assert np.array_equal(no_data, np.isnan(warped.image))
    # uncovered: detector pixels that fall west of the patch's first column
    xx, yy = bbox.pixel_grid()
    sx, _ = patch.wcs.all_world2pix(*wcs.all_pix2world(xx, yy, 0), 0)
    outside = sx < 299.5
    assert 0.05 < outside.mean() < 0.95
    assert np.all(no_data[outside])
    assert no_data.mean() == pytest.approx(outside.mean(), abs=0.02)
    # the NaN block maps to ~100 detector pixels plus the interpolation support
    x, y = wcs.all_world2pix(*patch.wcs.all_pix2world(405.0, 305.0, 0), 0)
    assert no_data[int(round(float(y))), int(round(float(x)))]


def test_task_builds_a_mosaic_from_two_patches():
    bbox, wcs = detector()
    refs = two_patches()
    task = GetDcrTemplateTask()
    result = task.make_template(refs, bbox, wcs, visit_at_zenith())
    template = result.template
    border = task.config.templateBorderSize
    assert template.bbox == bbox.grown(border)
    truth = render(wcs, template.bbox, *sky_sources())
    assert not np.any((template.mask & MaskPlane.NO_DATA) != 0)
    assert np.max(np.abs(template.image - truth)) < 0.01 * truth.max()
    # overlap of two equal-variance patches: variance halves there
    assert np.nanmin(template.variance) == pytest.approx(0.5, rel=1e-3)
    assert np.nanmax(template.variance) == pytest.approx(1.0, rel=1e-3)
    assert result.dataIds == [{"tract": 0, "patch": 1}, {"tract": 0, "patch": 2}]
    assert isinstance(template.psf, GaussianPsf)
    assert template.photo_calib == PhotoCalib(1.0)


def test_patches_with_other_calibrations_are_rescaled():
    bbox, wcs = detector()
    refs = two_patches()
    refs = [r for r in refs if r.dataId["patch"] == 1]
    for sub, exp in enumerate(make_patch((400.0, 350.0), Box2I(300, 0, 500, 700), calib=2.0)):
        refs.append(CoaddRef.from_exposure(exp, {"tract": 1, "patch": 5, "subfilter": sub}))
    template = GetDcrTemplateTask().make_template(refs, bbox, wcs, visit_at_zenith()).template
    truth = render(wcs, template.bbox, *sky_sources())
    assert np.max(np.abs(template.image - truth)) < 0.01 * truth.max()


def test_only_overlapping_patches_are_kept_and_no_overlap_is_no_work():
    bbox, wcs = detector()
    refs = two_patches()
    far = make_patch((400.0, 350.0), Box2I(5000, 5000, 100, 100))
    far_refs = [
        CoaddRef.from_exposure(e, {"tract": 0, "patch": 9, "subfilter": s})
        for s, e in enumerate(far)
    ]
    task = GetDcrTemplateTask()
    inputs = {"coaddExposureRefs": refs + far_refs, "bbox": bbox, "wcs": wcs}
    kept = task.getOverlappingExposures(inputs)
    assert {d["patch"] for d in kept.dataIds} == {1, 2}
    with pytest.raises(NoWorkFound, match="no DCR coadd patch overlaps"):
        task.getOverlappingExposures({**inputs, "coaddExposureRefs": far_refs})


def test_missing_subfilter_names_the_patch():
    task = GetDcrTemplateTask()
    with pytest.raises(MissingSubfilterError, match="tract 0 patch 2: found 2"):
        task.checkPatchList({0: [1, 1, 1, 2, 2]})
    task.checkPatchList({0: [1, 1, 1], 3: [4, 4, 4]})
    bbox, wcs = detector()
    refs = [r for r in two_patches() if not (r.dataId["patch"] == 2 and r.dataId["subfilter"] == 1)]
    with pytest.raises(MissingSubfilterError, match="patch 2"):
        task.make_template(refs, bbox, wcs, visit_at_zenith())


def test_nan_only_patch_is_an_error():
    bbox, wcs = detector()
    refs = two_patches()
    for r in refs:
        if r.dataId["patch"] == 2:
            r.get().image[:] = np.nan
    with pytest.raises(EmptyPatchError, match="tract 0 patch 2"):
        GetDcrTemplateTask().make_template(refs, bbox, wcs, visit_at_zenith())
