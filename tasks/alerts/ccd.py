"""Conversions between cutouts, astropy `CCDData` and FITS bytes.

`cutout_to_ccd_data` turns a `tasks.alerts.cutouts.Cutout` into the
`CCDData` that Rubin's ``createCcdDataCutout`` returns; `ccd_data_to_fits_bytes`
is ``streamCcdDataToBytes``: the fast FITS writer for cutouts with a local
TAN WCS (what `createCcdDataCutout` makes), ``CCDData.write`` for anything else.
"""

from __future__ import annotations

import io

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, VarianceUncertainty
from astropy.wcs import WCS

from tasks.alerts.cutouts import Cutout
from tasks.alerts.fits_bytes import LinearWcs, ccd_fits_bytes

__all__ = ["astropy_wcs", "ccd_data_to_fits_bytes", "cutout_to_ccd_data", "linear_wcs"]


def astropy_wcs(linear: LinearWcs) -> WCS:
    """Return the astropy WCS of a local linear TAN WCS."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = list(linear.crval)
    wcs.wcs.crpix = list(linear.crpix)
    wcs.wcs.cd = np.asarray(linear.cd)
    wcs.wcs.radesys = "ICRS"
    return wcs


def linear_wcs(wcs: WCS) -> LinearWcs | None:
    """Return the `LinearWcs` of a 2-axis TAN WCS without distortion, else `None`."""
    core = wcs.wcs
    if wcs.naxis != 2 or list(core.ctype) != ["RA---TAN", "DEC--TAN"] or wcs.has_distortion:
        return None
    return LinearWcs(
        crval=(float(core.crval[0]), float(core.crval[1])),
        crpix=(float(core.crpix[0]), float(core.crpix[1])),
        cd=np.asarray(wcs.pixel_scale_matrix, dtype=np.float64),
    )


def cutout_to_ccd_data(cut: Cutout) -> CCDData:
    """Return a cutout as a calibrated `CCDData` (nJy, variance, mask, WCS, origin)."""
    return CCDData(
        np.asarray(cut.image, dtype=np.float32),
        unit=u.nJy,
        uncertainty=VarianceUncertainty(np.asarray(cut.variance, dtype=np.float32)),
        mask=np.asarray(cut.mask, dtype=bool),
        wcs=astropy_wcs(cut.wcs),
        meta={"CUTMINX": cut.x0, "CUTMINY": cut.y0},
    )


def _variance(cutout: CCDData) -> np.ndarray | None | bool:
    """Variance array of a cutout, `None` without uncertainty, False if not convertible."""
    unc = cutout.uncertainty
    if unc is None:
        return None
    if isinstance(unc, VarianceUncertainty):
        return np.asarray(unc.array)
    try:
        return np.asarray(unc.represent_as(VarianceUncertainty).array)
    except (TypeError, ValueError, AttributeError):
        return False


def ccd_data_to_fits_bytes(cutout: CCDData) -> bytes:
    """Serialise a `CCDData` as the bytes of a FITS file.

    Cutouts with a 2-axis TAN WCS without distortion and simple header values
    take the fast writer (`tasks.alerts.fits_bytes`); anything else goes
    through ``CCDData.write``.
    """
    wcs = cutout.wcs
    linear = linear_wcs(wcs) if wcs is not None else None
    simple_meta = all(
        len(str(k)) <= 8 and isinstance(v, int | float | str | bool) for k, v in cutout.meta.items()
    )
    variance = _variance(cutout)
    if (wcs is None or linear is not None) and simple_meta and variance is not False:
        return ccd_fits_bytes(
            np.asarray(cutout.data),
            variance,
            None if cutout.mask is None else np.asarray(cutout.mask, dtype=bool),
            linear,
            unit=cutout.unit.to_string() if cutout.unit is not None else "",
            meta=dict(cutout.meta),
        )
    buf = io.BytesIO()
    cutout.write(buf, format="fits")
    return buf.getvalue()
