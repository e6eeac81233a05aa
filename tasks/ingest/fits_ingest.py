"""Calibrated single-epoch FITS images into `Exposure` objects and the data layout.

`read_image` applies an `tasks.ingest.profiles.InstrumentProfile`:

- image from its HDU (NaN pixels become ``NO_DATA``); a smooth background
  (median of sigma-clipped mesh cells, interpolated) is subtracted when the
  profile says the sky is still in;
- variance from a variance-like HDU or file (variance, inverse variance or
  standard deviation), else estimated from gain and read noise:
  ``(max(sky + source, 0) / gain + (read_noise / gain)**2)`` in image units²;
- mask bits mapped to our planes through the profile;
- WCS from the header as astropy reads it (TAN, TAN-SIP, TPV); a TPV
  distortion is refitted as TAN-SIP (order 4, checked to 0.01 pixel) because
  our exposures persist SIP, not PV terms;
- calibration from the AB zero point of one image unit;
- visit info from header keywords (time → midpoint TAI, band, exposure
  time, airmass, pointing, site, weather); az/alt and the parallactic angle
  are computed from the pointing, time and site when the header lacks them;
- a Gaussian PSF from the seeing keyword, or measured from the second
  moments of bright isolated peaks; the pipeline's characterization refits
  it from the image's own stars.

`ingest_image` writes the exposure into a `DataLayout`: science images to
``exposures/visit_V/det_D.fits`` (with their row of ``visits.parquet``),
template images (a deep coadd, or an earlier good image of the field) to
``coadds/deep/tract_0/patch_N/BAND.fits``, where the plain-template step of
``apdb-pipeline run`` finds them.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import AltAz, Angle, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import fit_wcs_from_points
from scipy import ndimage

from apdb.schema import BANDS
from tasks.data.layout import DataLayout, DataLayoutError, visit_info_to_row
from tasks.images import Exposure, MaskPlane
from tasks.images.calib import PhotoCalib
from tasks.images.errors import ImageError
from tasks.images.psf import GaussianPsf, Psf
from tasks.images.visit_info import RUBIN_OBSERVATORY, VisitInfo, Weather
from tasks.images.wcs_utils import params_to_wcs, wcs_to_params
from tasks.ingest.errors import IngestError
from tasks.ingest.mapping import AB_NJY_ZERO_POINT
from tasks.ingest.profiles import InstrumentProfile

__all__ = ["IngestResult", "read_image", "ingest_image", "estimate_psf_sigma", "background"]

_log = logging.getLogger(__name__)
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class IngestResult:
    """Where an ingested image went."""

    path: Path
    role: str
    visit: int
    detector: int
    band: str
    exposure: Exposure


# -- header values ---------------------------------------------------------------------
def _value(header: fits.Header, spec: Any, what: str, required: bool = True) -> Any:
    """Return a literal number, or the value of the keyword ``spec``."""
    if spec is None:
        if required:
            raise IngestError(f"the profile gives no {what}")
        return None
    if isinstance(spec, int | float):
        return spec
    if spec in header:
        value = header[spec]
        if isinstance(value, str):
            value = value.strip()
        return value
    if required:
        raise IngestError(f"header keyword {spec!r} ({what}) is missing")
    return None


def _float(header: fits.Header, spec: Any, what: str, required: bool = True) -> float | None:
    value = _value(header, spec, what, required)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{what} {value!r} (keyword {spec!r}) is not a number") from None
    if not math.isfinite(out) or out <= -9998:  # -9999: ZTF's "not measured"
        if required:
            raise IngestError(f"{what} (keyword {spec!r}) is not measured ({value!r})")
        return None
    return out


def _angle(header: fits.Header, spec: Any, what: str, hours: bool) -> float | None:
    value = _value(header, spec, what, required=False)
    if value is None:
        return None
    if isinstance(value, str) and (":" in value or "h" in value or "d" in value):
        try:
            unit = u.hourangle if hours else u.deg
            return float(Angle(value, unit=unit).deg)
        except ValueError:
            raise IngestError(f"{what} {value!r} is not an angle") from None
    return _float(header, spec, what, required=False)


def _band(header: fits.Header, profile: InstrumentProfile) -> str:
    raw = str(_value(header, profile.band, "band")).strip()
    if raw in profile.bands:
        return profile.bands[raw]
    for key in sorted(profile.bands, key=len, reverse=True):
        if raw.startswith(key):
            return profile.bands[key]
    if raw in BANDS:
        return raw
    raise IngestError(f"band {raw!r} (keyword {profile.band}) is not in the profile's bands")


# -- planes -------------------------------------------------------------------------------
def _hdu(hdul: fits.HDUList, spec: int | str, what: str) -> Any:
    try:
        hdu = hdul[spec]
    except (KeyError, IndexError):
        raise IngestError(f"no {what} HDU {spec!r} in the file") from None
    if hdu.data is None:
        raise IngestError(f"{what} HDU {spec!r} holds no data")
    return hdu


def background(image: np.ndarray, usable: np.ndarray, mesh: int) -> np.ndarray:
    """Smooth background: 3-sigma-clipped median per mesh cell, interpolated (bilinear)."""
    ny, nx = image.shape
    gy, gx = max(1, round(ny / mesh)), max(1, round(nx / mesh))
    ys = np.linspace(0, ny, gy + 1).astype(int)
    xs = np.linspace(0, nx, gx + 1).astype(int)
    grid = np.full((gy, gx), np.nan)
    for i in range(gy):
        for j in range(gx):
            cell = image[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            ok = usable[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            values = cell[ok]
            for _ in range(3):
                if values.size < 10:
                    break
                med, std = np.median(values), 1.4826 * np.median(np.abs(values - np.median(values)))
                values = values[np.abs(values - med) < 3 * max(std, 1e-12)]
            if values.size >= 10:
                grid[i, j] = np.median(values)
    if np.isnan(grid).all():
        raise IngestError("no usable pixel to estimate the background")
    if np.isnan(grid).any():
        grid[np.isnan(grid)] = np.nanmedian(grid)
    grid = ndimage.median_filter(grid, size=3, mode="nearest")
    # cell centres -> pixels
    cy = (ys[:-1] + ys[1:]) / 2.0 - 0.5
    cx = (xs[:-1] + xs[1:]) / 2.0 - 0.5
    yi = np.interp(np.arange(ny), cy, np.arange(gy))
    xi = np.interp(np.arange(nx), cx, np.arange(gx))
    yy, xx = np.meshgrid(yi, xi, indexing="ij")
    return ndimage.map_coordinates(grid, [yy, xx], order=1, mode="nearest").astype(np.float32)


def _mask(data: np.ndarray, profile: InstrumentProfile) -> np.ndarray:
    raw = np.asarray(data).astype(np.int64)
    out = np.zeros(raw.shape, dtype=np.uint32)
    for plane, bits in profile.mask_planes.items():
        try:
            value = int(MaskPlane[plane])
        except KeyError:
            raise IngestError(f"the profile maps to unknown mask plane {plane!r}") from None
        selector = 0
        for bit in bits:
            selector |= 1 << int(bit)
        out[(raw & selector) != 0] |= np.uint32(value)
    if profile.mask_nonzero_plane is not None:
        out[raw != 0] |= np.uint32(int(MaskPlane[profile.mask_nonzero_plane]))
    return out


def _variance(data: np.ndarray, kind: str) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "inverse_variance":
            return np.where(data > 0, 1.0 / data, np.nan).astype(np.float32)
        if kind == "stddev":
            return (data * data).astype(np.float32)
    return data


# -- WCS ---------------------------------------------------------------------------------
def _wcs(header: fits.Header, shape: tuple[int, int]) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except (ValueError, KeyError, MemoryError) as exc:
            raise IngestError(f"cannot read the WCS: {exc}") from None
    if not wcs.has_celestial:
        raise IngestError("the header has no celestial WCS")
    # our exposures persist the WCS core and SIP; a distortion they would lose
    # (TPV, lookup tables) is refitted as TAN-SIP on a grid
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 40), np.linspace(0, ny - 1, 40))
    xy = (gx.ravel(), gy.ravel())
    kept = params_to_wcs(wcs_to_params(wcs))
    px, py = kept.all_world2pix(*wcs.all_pix2world(xy[0], xy[1], 0), 0)
    if float(np.max(np.hypot(px - xy[0], py - xy[1]))) < 0.01:
        return wcs
    # fitted on a coarser grid (the fit's cost grows with the points), checked on the fine one
    fx, fy = np.meshgrid(np.linspace(0, nx - 1, 12), np.linspace(0, ny - 1, 12))
    fit_ra, fit_dec = wcs.all_pix2world(fx.ravel(), fy.ravel(), 0)
    world = SkyCoord(fit_ra * u.deg, fit_dec * u.deg)
    center = SkyCoord(*wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0), unit="deg")
    sip = fit_wcs_from_points(
        (fx.ravel(), fy.ravel()), world, proj_point=center[0], projection="TAN", sip_degree=4
    )
    ra, dec = wcs.all_pix2world(xy[0], xy[1], 0)
    back_x, back_y = sip.all_world2pix(ra, dec, 0)
    err = float(np.max(np.hypot(back_x - xy[0], back_y - xy[1])))
    if err > 0.01:
        raise IngestError(f"the WCS distortion is not representable as TAN-SIP ({err:.3f} px)")
    return sip


# -- PSF ---------------------------------------------------------------------------------
def estimate_psf_sigma(image: np.ndarray, variance: np.ndarray, mask: np.ndarray) -> float:
    """Gaussian sigma (pixels): median adaptive-moment width of bright, isolated, clean peaks.

    The moments are those of the characterization
    (`tasks.characterize.psf_model.adaptive_moments`, less the 1/12 pixel² of
    pixel integration).
    """
    from tasks.characterize.psf_model import adaptive_moments

    bad = (mask & int(MaskPlane.SAT | MaskPlane.BAD | MaskPlane.NO_DATA | MaskPlane.CR)) != 0
    noise = float(np.sqrt(np.nanmedian(variance[~bad])))
    smooth = ndimage.gaussian_filter(np.where(bad, 0.0, image), 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=21)) & (smooth > 10 * noise)
    ys, xs = np.nonzero(peaks)
    half = 10
    inside = (
        (ys >= half) & (xs >= half) & (ys < image.shape[0] - half) & (xs < image.shape[1] - half)
    )
    stamps = []
    for y, x in zip(ys[inside], xs[inside], strict=True):
        window = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        stamp = image[window].astype(float)
        if bad[window].any() or stamp.max() < 50 * noise or stamp.sum() <= 0:
            continue
        # isolated: no other local maximum above a tenth of the peak in the stamp
        maxima = (stamp == ndimage.maximum_filter(stamp, size=3)) & (stamp > 0.1 * stamp.max())
        if maxima.sum() > 1:
            continue
        stamps.append(stamp / stamp.sum())
    if len(stamps) < 5:
        raise IngestError(f"only {len(stamps)} bright clean stars to measure the PSF width")
    moments = adaptive_moments(np.array(stamps))
    widths = np.sqrt(np.clip(0.5 * (moments[:, 0] + moments[:, 1]) - 1.0 / 12.0, 1e-4, None))
    return float(np.median(widths))


# -- the exposure -------------------------------------------------------------------------
def _site(header: fits.Header, profile: InstrumentProfile) -> EarthLocation:
    lat = _float(header, profile.site.lat, "site latitude", required=False)
    lon = _float(header, profile.site.lon, "site longitude", required=False)
    height = _float(header, profile.site.height, "site height", required=False)
    if lat is None or lon is None:
        _log.info("no site in the header or profile: Rubin's site is recorded")
        return RUBIN_OBSERVATORY
    return EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, (height or 0.0) * u.m)


def _visit_info(
    header: fits.Header,
    profile: InstrumentProfile,
    wcs: WCS,
    shape: tuple[int, int],
    visit: int | None,
    template: bool = False,
) -> VisitInfo:
    raw_time = _value(header, profile.time, "time", required=not template)
    if raw_time is None:  # a coadd: no single epoch
        raw_time = 51544.5 if profile.time_format == "mjd" else 2451545.0
        if profile.time_format == "isot":
            raw_time = "2000-01-01T12:00:00"
    try:
        if profile.time_format == "isot":
            start = Time(str(raw_time), format="isot", scale=profile.time_scale)
        else:
            start = Time(float(raw_time), format=profile.time_format, scale=profile.time_scale)
    except (TypeError, ValueError):
        raise IngestError(f"time {raw_time!r} (keyword {profile.time}) is not a time") from None
    exptime = _float(header, profile.exposure_time, "exposure time", required=not template)
    exptime = 0.0 if exptime is None else exptime
    mid = start + (0.5 * exptime * u.s if profile.time_reference == "start" else 0.0 * u.s)
    band = _band(header, profile)
    site = _site(header, profile)
    ny, nx = shape
    cra, cdec = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    ra = _angle(header, profile.ra, "boresight RA", hours=True)
    dec = _angle(header, profile.dec, "boresight Dec", hours=False)
    if ra is None or dec is None:
        ra, dec = float(cra[0]), float(cdec[0])
    pointing = SkyCoord(ra * u.deg, dec * u.deg)
    az = _float(header, profile.azimuth, "azimuth", required=False)
    alt = _float(header, profile.altitude, "altitude", required=False)
    if az is None or alt is None:
        frame = AltAz(obstime=mid, location=site)
        altaz = pointing.transform_to(frame)
        az, alt = float(altaz.az.deg), float(altaz.alt.deg)
    airmass = _float(header, profile.airmass, "airmass", required=False)
    if airmass is None or airmass < 1.0:
        airmass = 1.0 / max(math.sin(math.radians(max(alt, 5.0))), 1e-3)
    # parallactic angle from the hour angle, declination and latitude
    lst = mid.sidereal_time("apparent", longitude=site.lon)
    ha = (lst - Angle(ra, u.deg)).wrap_at(180 * u.deg).rad
    lat, d = site.lat.rad, math.radians(dec)
    parallactic = math.degrees(
        math.atan2(math.sin(ha), math.tan(lat) * math.cos(d) - math.sin(d) * math.cos(ha))
    )
    # sky rotation: position angle of the detector's +y axis
    x0, y0 = (nx - 1) / 2, (ny - 1) / 2
    r1, d1 = wcs.all_pix2world([x0, x0], [y0, y0 + 10.0], 0)
    rotation = float(
        SkyCoord(r1[0] * u.deg, d1[0] * u.deg)
        .position_angle(SkyCoord(r1[1] * u.deg, d1[1] * u.deg))
        .deg
    )
    weather = Weather()
    t = _float(header, profile.temperature, "temperature", required=False)
    p = _float(header, profile.pressure, "pressure", required=False)
    h = _float(header, profile.humidity, "humidity", required=False)
    weather = Weather(
        t if t is not None and -100 < t < 100 else weather.temperature,
        p if p is not None and 0 < p < 1200 else weather.pressure,
        h if h is not None and 0 <= h <= 100 else weather.humidity,
    )
    if visit is None:
        spec = _value(header, profile.visit, "visit", required=False) if profile.visit else None
        visit = int(spec) if spec is not None else int(round(mid.tai.mjd * 86400.0))
    try:
        return VisitInfo(
            visit_id=int(visit),
            exposure_time=exptime,
            midpoint=mid.tai,
            band=band,
            boresight_ra=ra,
            boresight_dec=dec,
            boresight_az_alt=(az, alt),
            airmass=airmass,
            parallactic_angle=parallactic,
            rotator_angle=rotation,
            observatory=site,
            weather=weather,
        )
    except ImageError as exc:
        raise IngestError(f"bad visit metadata: {exc}") from None


def read_image(
    path: str | Path,
    profile: InstrumentProfile,
    *,
    mask_path: str | Path | None = None,
    variance_path: str | Path | None = None,
    hdu: int | str | None = None,
    zero_point: float | None = None,
    visit: int | None = None,
    detector: int | None = None,
    template: bool = False,
    psf: Psf | None = None,
) -> Exposure:
    """Read one calibrated image through an instrument profile (see the module docstring).

    Parameters
    ----------
    path : path
        The image FITS file.
    profile : `InstrumentProfile`
    mask_path, variance_path : path, optional
        Separate mask and variance-like files (same HDU layout as the image).
    hdu : `int` or `str`, optional
        Overrides the profile's image HDU (and that of the mask/variance files).
    zero_point : `float`, optional
        Overrides the profile's zero point (AB magnitude of one image unit).
    visit, detector : `int`, optional
        Override the header's.
    template : `bool`, optional
        The image is a template (e.g. a deep coadd): time and exposure time
        may be missing.
    psf : `tasks.images.psf.Psf`, optional
        A PSF model to attach (e.g. the instrument's own,
        `tasks.ingest.daophot_psf.DaophotPsf`) instead of a Gaussian.
    """
    path = Path(path)
    if profile.format == "exposure":
        try:
            return Exposure.read_fits(path)
        except ImageError as exc:
            raise IngestError(str(exc)) from None
    if not path.exists():
        raise IngestError(f"no such image: {path}")
    image_hdu = profile.image_hdu if hdu is None else hdu
    try:
        with warnings.catch_warnings(record=True) as opened:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc}") from None
    # a truncated or corrupt file fails only when its data are read (astropy
    # raises OSError, ValueError or TypeError there): our error, with the file
    try:
        with hdul, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data_hdu = _hdu(hdul, image_hdu, "image")
            header = fits.Header(hdul[0].header)
            if data_hdu is not hdul[0]:
                header.update(data_hdu.header)  # the extension's keywords win
            image = np.asarray(data_hdu.data, dtype=np.float32)
            if image.ndim != 2:
                raise IngestError(f"the image HDU is {image.ndim}-D, expected 2-D")
            variance = None
            if profile.variance_hdu is not None:
                variance = _variance(
                    _hdu(hdul, profile.variance_hdu, "variance").data, profile.variance_kind
                )
            mask = np.zeros(image.shape, dtype=np.uint32)
            if profile.mask_hdu is not None:
                mask |= _mask(_hdu(hdul, profile.mask_hdu, "mask").data, profile)
    except (OSError, ValueError, TypeError) as exc:
        raise IngestError(f"cannot read {path}: {exc}") from None
    for warning in opened + caught:
        # astropy only warns when a file is shorter than its headers say
        if "truncated" in str(warning.message):
            raise IngestError(f"cannot read {path}: {warning.message}")
        _log.debug("%s: %s", path.name, warning.message)
    for extra, what in ((variance_path, "variance"), (mask_path, "mask")):
        if extra is None:
            continue
        try:
            with fits.open(extra, memmap=False) as eh:
                data = _hdu(eh, image_hdu, what).data
                if what == "variance":
                    variance = _variance(data, profile.variance_kind)
                else:
                    mask |= _mask(data, profile)
        except (OSError, ValueError, TypeError) as exc:
            raise IngestError(f"cannot read {what} file {extra}: {exc}") from None
    for name, plane in (("variance", variance), ("mask", mask)):
        if plane is not None and plane.shape != image.shape:
            raise IngestError(
                f"the {name} plane {plane.shape} differs from the image {image.shape}"
            )
    missing = ~np.isfinite(image)
    mask[missing] |= np.uint32(int(MaskPlane.NO_DATA))
    image = np.where(missing, np.float32(0.0), image)
    usable = (mask & int(MaskPlane.NO_DATA | MaskPlane.BAD | MaskPlane.SAT)) == 0
    if not usable.any():
        raise IngestError(
            f"{path.name}: no usable pixel (every pixel is NaN/inf or masked NO_DATA, BAD or SAT)"
        )
    sky = np.zeros_like(image)
    if profile.subtract_background:
        sky = background(image, usable, profile.background_mesh)
        image = image - sky
    if variance is None:
        gain = _float(header, profile.gain, "gain", required=False)
        read_noise = _float(header, profile.read_noise, "read noise", required=False)
        if gain is None or read_noise is None or gain <= 0:
            raise IngestError(
                f"{path.name}: no variance plane and no gain/read noise to estimate it "
                "(give --variance or set gain and read_noise in the profile)"
            )
        signal = np.maximum(image + sky, 0.0)
        variance = (signal / gain + (read_noise / gain) ** 2).astype(np.float32)
    bad_var = ~np.isfinite(variance) | (variance <= 0)
    mask[bad_var] |= np.uint32(int(MaskPlane.NO_DATA))
    variance = np.where(bad_var, np.float32(np.nanmedian(variance[~bad_var])), variance)
    wcs = _wcs(header, image.shape)
    zp = zero_point if zero_point is not None else _float(header, profile.zero_point, "zero point")
    calib = PhotoCalib(calibration_mean=10.0 ** ((AB_NJY_ZERO_POINT - zp) / 2.5))
    info = _visit_info(header, profile, wcs, image.shape, visit, template)
    if detector is None:
        det = _value(header, profile.detector, "detector", required=False)
        detector = int(det) if det is not None else 0
    if psf is None:
        fwhm = _float(header, profile.seeing_fwhm_pixels, "seeing", required=False)
        sigma = (
            fwhm / _FWHM_PER_SIGMA
            if fwhm is not None and fwhm > 0.5
            else estimate_psf_sigma(image, variance, mask)
        )
        psf = GaussianPsf(sigma)
    try:
        return Exposure(
            image,
            mask,
            variance.astype(np.float32),
            wcs,
            psf=psf,
            photo_calib=calib,
            visit_info=info,
            detector=int(detector),
        )
    except ImageError as exc:
        raise IngestError(f"{path.name}: {exc}") from None


def ingest_image(layout: DataLayout, exposure: Exposure, role: str = "science") -> IngestResult:
    """Write an exposure into a data layout as a science image or a template.

    Science images go to ``exposures/visit_V/det_D.fits`` and their row into
    ``visits.parquet`` (a visit ingested again must have the same metadata);
    templates to ``coadds/deep/tract_0/patch_N/BAND.fits`` (N: the first
    free patch of the band).
    """
    info = exposure.visit_info
    if info is None or exposure.detector is None:
        raise IngestError("the exposure needs visit info and a detector")
    band = exposure.band or info.band
    if role == "template":
        n = 0
        while layout.deep_coadd_path(0, n, band).exists():
            n += 1
        path = layout.write_deep_coadd(exposure, 0, n, band)
        return IngestResult(path, role, info.visit_id, exposure.detector, band, exposure)
    if role != "science":
        raise IngestError(f"unknown role {role!r}: science or template")
    row = pd.DataFrame([visit_info_to_row(info)])
    try:
        table = layout.read_visit_table() if layout.visits_path.exists() else row.iloc[:0]
    except DataLayoutError as exc:
        raise IngestError(str(exc)) from None
    same = table[table["visit"] == info.visit_id]
    if len(same):
        old = same.iloc[0]
        if old["band"] != band or not np.isclose(old["midpointMjdTai"], info.midpoint_mjd_tai):
            raise IngestError(
                f"visit {info.visit_id} is already ingested with band {old['band']} at "
                f"MJD {old['midpointMjdTai']:.6f}: a different exposure has the same visit id"
            )
    path = layout.write_exposure(exposure)
    if not len(same):
        layout.write_visit_table(pd.concat([table, row], ignore_index=True))
    return IngestResult(path, role, info.visit_id, exposure.detector, band, exposure)
