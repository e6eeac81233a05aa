"""Registration noise: measured on the images, dipoles of static stars suppressed, changes kept.

A star field is rendered twice: a sharp, deep template and a science image in
which every star is displaced by a random shift (sigma 0.06 px per axis, the
registration noise to be measured), with transients and variable stars
added (their expected S/N from the difference variance, source noise
included).  Both PSFs are Gaussian, so the matching kernel is exact and
everything left at the static stars is the registration dipole.
"""

import numpy as np
import pytest
from astropy.time import Time

from tasks.core.base import TaskError
from tasks.diffim.detect import DetectAndMeasureTask
from tasks.diffim.evaluate import expected_change_snr
from tasks.diffim.peaks import filter_image
from tasks.diffim.subtract import SubtractImagesTask
from tasks.diffim.systematics import estimate_registration_noise
from tasks.images import (
    Box2I,
    Exposure,
    GaussianPsf,
    MaskPlane,
    VisitInfo,
    make_tan_wcs,
)
from tasks.simulate.render import render_sources
from tests.tasks.diffim.nearstar import deep_template, science_exposure

SIZE = 400
BORDER = 20
SKY = 200.0
READ = 5.0
SHIFT_SIGMA = 0.06
SCI_SIGMA = 1.9


def _field(seed=11):
    rng = np.random.default_rng(seed)
    bbox = Box2I(0, 0, SIZE, SIZE)
    tbox = bbox.grown(BORDER)
    wcs = make_tan_wcs(30.0, 10.0, (SIZE / 2, SIZE / 2), 0.2, 0.0)
    # stars on a jittered grid (isolated), fluxes with S/N 20 .. 3000
    g = np.arange(-BORDER + 12, SIZE + BORDER - 12, 22.0)
    x, y = (v.ravel() + rng.uniform(-4, 4, v.size) for v in np.meshgrid(g, g))
    n = x.size
    sigma_counts = np.sqrt(SKY + READ**2) * np.sqrt(4 * np.pi * SCI_SIGMA**2)
    flux = 10 ** rng.uniform(np.log10(20), np.log10(3000), n) * sigma_counts
    kind = np.array(["static"] * n, dtype=object)
    inside = (x > 15) & (x < SIZE - 15) & (y > 15) & (y < SIZE - 15)
    # 12 variables (faint to bright, changes of 10 .. 30 sky sigma) and 10 transients
    candidates = rng.permutation(np.flatnonzero(inside))
    variables, transients = candidates[:12], candidates[12:22]
    kind[variables] = "variable"
    kind[transients] = "transient"
    change = np.zeros(n)
    change[variables] = rng.uniform(10, 30, 12) * sigma_counts * rng.choice([-1, 1], 12)
    flux[variables] = np.maximum(flux[variables], 3 * np.abs(change[variables]))
    template_flux = np.where(kind == "transient", 0.0, flux)
    change[transients] = rng.uniform(7, 20, 10) * sigma_counts
    sci_flux = template_flux + change
    shift = rng.normal(0.0, SHIFT_SIGMA, (2, n))
    template = deep_template(rng, tbox, wcs, x, y, template_flux)
    info = VisitInfo(
        visit_id=77,
        exposure_time=30.0,
        midpoint=Time(61000.3, format="mjd", scale="tai"),
        band="i",
        boresight_ra=30.0,
        boresight_dec=10.0,
        boresight_az_alt=(120.0, 60.0),
        airmass=1.15,
        parallactic_angle=10.0,
        rotator_angle=0.0,
    )
    science = science_exposure(rng, bbox, wcs, x + shift[0], y + shift[1], sci_flux, info, 3)
    return x, y, kind, change, template, science


@pytest.fixture(scope="module")
def field():
    x, y, kind, change, template, science = _field()
    sub = SubtractImagesTask().run(template, science)
    # expected S/N of each change: PSF-fit error from the difference variance
    # (sky, and the source's own shot noise for bright variables)
    change_snr = expected_change_snr(sub.difference, x, y, change)
    return x, y, kind, change_snr, science, sub.difference


def _match(sources, x, y, radius=2.5):
    if not len(sources):
        return np.zeros(len(x), bool), np.zeros(0, bool)
    d = np.hypot(sources["x"].to_numpy()[:, None] - x, sources["y"].to_numpy()[:, None] - y)
    return d.min(axis=0) < radius, d.min(axis=1) < radius


def test_registration_noise_is_measured(field):
    x, y, kind, change_snr, science, diff = field
    kernel = science.psf.compute_kernel_image(200, 200)[5:-5, 5:-5]
    first = filter_image(diff.image, diff.variance, kernel)
    noise = estimate_registration_noise(
        diff.image,
        diff.variance,
        science.image,
        science.variance,
        first.unusable,
        first.kernel,
    )
    print(f"registration sigma {noise.sigma_x:.4f} px from {noise.n_stars} stars")
    assert noise.n_stars >= 50
    assert noise.sigma_x == pytest.approx(SHIFT_SIGMA, rel=0.3)


def test_dipoles_are_suppressed_and_changes_kept(field):
    x, y, kind, change_snr, science, diff = field
    changing = (kind != "static") & (np.abs(np.nan_to_num(change_snr)) >= 7.0)
    assert changing.sum() >= 15
    results = {}
    for sigma in (0.0, -1.0):
        task = DetectAndMeasureTask()
        task.config.registrationSigma = sigma
        sources = task.run(diff, science).diaSources
        found, real = _match(sources, x[changing], y[changing])
        results[sigma] = (found, int((~real).sum()), len(sources))
        print(
            f"registrationSigma {sigma}: {len(sources)} DiaSources, {(~real).sum()} spurious, "
            f"{found.sum()}/{changing.sum()} changes found"
        )
    found_plain, spurious_plain, _ = results[0.0]
    found, spurious, _ = results[-1.0]
    # the shifted static stars make many dipole detections without the correction
    assert spurious_plain >= 20
    assert spurious <= spurious_plain // 5
    # every change above 7 sigma (some of them on variable stars far brighter
    # than the change, whose own registration dipole is larger) is still found
    assert found.all()


def test_bad_source_flags_remove_sources(field):
    x, y, kind, change_snr, science, diff = field
    transients = np.flatnonzero(kind == "transient")
    tx, ty = int(round(x[transients[0]])), int(round(y[transients[0]]))
    masked = Exposure(
        diff.image,
        diff.mask.copy(),
        diff.variance,
        diff.wcs,
        diff.bbox,
        psf=diff.psf,
        photo_calib=diff.photo_calib,
        visit_info=diff.visit_info,
        detector=diff.detector,
    )
    # a transient whose whole 3x3 centre is interpolated is removed (INTRP is
    # not an unusable plane, so it is still detected and measured)
    masked.mask[ty - 1 : ty + 2, tx - 1 : tx + 2] |= np.uint32(MaskPlane.INTRP)
    before, _ = _match(DetectAndMeasureTask().run(diff, science).diaSources, [tx], [ty])
    task = DetectAndMeasureTask()
    after, _ = _match(task.run(masked, science).diaSources, [tx], [ty])
    assert before.all() and not after.any()
    assert task.metadata["nBadSourcesRemoved"] >= 1
    task.config.badSourceFlags = ["pixelFlags_doesNotExist"]
    with pytest.raises(TaskError, match="bad-source flag"):
        task.run(diff, science)


def test_offset_source_fit_separates_a_transient_from_its_hosts_dipole():
    # a bright star shifted by 0.1 px (a registration dipole) with and without
    # a transient 2.5 px away: the joint fit finds the transient's flux and
    # nothing where there is only the dipole; the template shows no source there
    from tasks.diffim.systematics import nearest_bright_source, offset_source_significance

    rng = np.random.default_rng(5)
    psf = GaussianPsf(SCI_SIGMA)
    bbox = Box2I(0, 0, 64, 64)
    star, flux = (30.3, 31.6), 2e5
    tx, ty = 32.6, 32.6
    var = np.full(bbox.shape, SKY + READ**2)
    template = render_sources(bbox, psf, np.array([star[0]]), np.array([star[1]]), [flux])
    shifted = render_sources(bbox, psf, np.array([star[0] + 0.1]), np.array([star[1]]), [flux])
    transient = render_sources(bbox, psf, np.array([tx]), np.array([ty]), [3000.0])
    noise = rng.normal(0, np.sqrt(var))
    unusable = np.zeros(bbox.shape, bool)

    def psf_images(x, y):
        return psf.compute_images(x, y)

    expected = 3000.0 / np.sqrt(1.0 / np.sum(psf_images([tx], [ty])[0] ** 2 / var[0, 0]))
    for with_transient in (True, False):
        diff = shifted - template + noise + (transient if with_transient else 0.0)
        found, nx, ny = nearest_bright_source(
            template, unusable, psf.compute_kernel_image(32, 32), [33], [33], [1e3], search=8
        )
        assert found[0] and np.hypot(nx[0] - star[0], ny[0] - star[1]) < 1.0
        sig, x, y, ratio, sx, sy = offset_source_significance(
            diff, var, unusable, psf_images, [33.0], [33.0], nx, ny, template=template
        )
        science = shifted + noise + (transient if with_transient else 0.0)
        prior = offset_source_significance(
            diff,
            var,
            unusable,
            psf_images,
            [33.0],
            [33.0],
            nx,
            ny,
            template=template,
            science=science,
            shift_sigma=0.1,
        )[0]
        if with_transient:
            # the star's free flux change and shift cost S/N at 1.3 PSF sigmas;
            # a prior on the shift (the registration noise) gives some back
            assert 0.4 * expected < sig[0] <= prior[0] < 1.2 * expected
            assert np.hypot(x[0] - tx, y[0] - ty) < 0.5
            assert abs(ratio[0]) < 0.1
            assert np.hypot(sx[0] - star[0], sy[0] - star[1]) < 0.1
        else:
            assert abs(sig[0]) < 4.0 and abs(prior[0]) < 4.0
