"""FITS persistence of `Exposure`: one multi-extension file per exposure.

Layout
------
- primary HDU: no data; header ``EXPFMT`` (format version), ``BAND``,
  ``DETECTOR`` (-1 when unknown), ``LTV1``/``LTV2`` (minus the bbox origin, the
  IRAF convention), ``VISIT`` and ``MJD-TAI`` for people reading headers.
- ``IMAGE``, ``MASK`` (uint32; plane names as ``MP_<NAME> = bit``), ``VARIANCE``:
  the arrays, with the WCS of array indices in their headers (so viewers such
  as ds9 show correct coordinates) and ``CRVAL1A``/``CRVAL2A`` style origin
  cards (``LTV1``/``LTV2``).
- ``WCS``: the parent WCS's exact float64 state (FITS header cards keep only
  ~14 digits), so the file round-trips bit for bit.
- ``PSF``, ``PHOTOCALIB``, ``VISITINFO``, ``APCORR``: present when set; models
  are written through the persistence registry (`tasks.images.persistence`).
"""

from __future__ import annotations

from os import PathLike

import numpy as np
from astropy.io import fits

from tasks.images.calib import PhotoCalib
from tasks.images.errors import ExposureFormatError, ImageError
from tasks.images.exposure import Exposure
from tasks.images.geom import Box2I
from tasks.images.mask import MASK_DTYPE, plane_names, planes_from_names
from tasks.images.persistence import (
    object_from_hdu,
    object_to_hdu,
    params_from_hdu,
    params_to_hdu,
)
from tasks.images.psf import psf_from_hdu, psf_to_hdu
from tasks.images.visit_info import VisitInfo
from tasks.images.wcs_utils import params_to_wcs, wcs_to_params

__all__ = ["write_exposure", "read_exposure", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _native(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def write_exposure(exposure: Exposure, path: str | PathLike[str]) -> None:
    """Write ``exposure`` to ``path`` (overwriting), as described in the module docstring."""
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["EXPFMT"] = (FORMAT_VERSION, "apdb-pipeline exposure format version")
    hdr["BAND"] = exposure.band if exposure.band is not None else ""
    hdr["DETECTOR"] = exposure.detector if exposure.detector is not None else -1
    hdr["LTV1"] = -exposure.bbox.x0
    hdr["LTV2"] = -exposure.bbox.y0
    hdr["BBOXW"] = exposure.bbox.width
    hdr["BBOXH"] = exposure.bbox.height
    if exposure.visit_info is not None:
        hdr["VISIT"] = exposure.visit_info.visit_id
        hdr["MJD-TAI"] = exposure.visit_info.midpoint_mjd_tai
    wcs_header = fits.Header()
    if exposure.wcs is not None:
        wcs_header = exposure.array_wcs().to_header(relax=True)
    hdus: list = [primary]
    for name, data in (
        ("IMAGE", exposure.image),
        ("MASK", exposure.mask.astype(MASK_DTYPE, copy=False)),
        ("VARIANCE", exposure.variance),
    ):
        hdu = fits.ImageHDU(data=data, name=name, uint=True)
        hdu.header.update(wcs_header)
        hdu.header["LTV1"] = -exposure.bbox.x0
        hdu.header["LTV2"] = -exposure.bbox.y0
        if name == "MASK":
            for plane, bit in plane_names().items():
                hdu.header[f"HIERARCH MP_{plane}"] = bit
        hdus.append(hdu)
    if exposure.wcs is not None:
        hdu = params_to_hdu(wcs_to_params(exposure.wcs))
        hdu.name = "WCS"
        hdus.append(hdu)
    if exposure.psf is not None:
        hdus.append(psf_to_hdu(exposure.psf, "PSF"))
    if exposure.photo_calib is not None:
        hdu = exposure.photo_calib.to_hdu()
        hdu.name = "PHOTOCALIB"
        hdus.append(hdu)
    if exposure.visit_info is not None:
        hdu = exposure.visit_info.to_hdu()
        hdu.name = "VISITINFO"
        hdus.append(hdu)
    if exposure.ap_corr_map is not None:
        hdus.append(object_to_hdu(exposure.ap_corr_map, "APCORR"))
    try:
        fits.HDUList(hdus).writeto(path, overwrite=True)
    except OSError as exc:
        raise ImageError(f"cannot write exposure to {path}: {exc}") from exc


def _read_mask(hdu: fits.ImageHDU) -> np.ndarray:
    mask = _native(np.asarray(hdu.data)).astype(MASK_DTYPE, copy=False)
    names = {key[3:]: int(value) for key, value in hdu.header.items() if key.startswith("MP_")}
    remap = planes_from_names(names)
    if all(src == dst for src, dst in remap.items()):
        return mask
    out = np.zeros_like(mask)
    for src, dst in remap.items():
        out |= ((mask >> np.uint32(src)) & np.uint32(1)) << np.uint32(dst)
    return out


def read_exposure(path: str | PathLike[str]) -> Exposure:
    """Read an exposure written by `write_exposure`.

    Raises
    ------
    ExposureFormatError
        If the file is missing, corrupt, or lacks the exposure extensions.
    """
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ExposureFormatError(f"cannot read exposure {path}: {exc}") from exc
    with hdul:
        try:
            hdr = hdul[0].header
            if "EXPFMT" not in hdr:
                raise ExposureFormatError(f"{path} is not an exposure file (no EXPFMT)")
            names = {hdu.name for hdu in hdul}
            missing = {"IMAGE", "MASK", "VARIANCE"} - names
            if missing:
                raise ExposureFormatError(f"{path} lacks extension(s) {sorted(missing)}")
            image = _native(np.asarray(hdul["IMAGE"].data))
            variance = _native(np.asarray(hdul["VARIANCE"].data))
            mask = _read_mask(hdul["MASK"])
            bbox = Box2I(-int(hdr["LTV1"]), -int(hdr["LTV2"]), image.shape[1], image.shape[0])
            wcs = None
            if "WCS" in names:
                wcs = params_to_wcs(params_from_hdu(hdul["WCS"]))
            psf = psf_from_hdu(hdul["PSF"]) if "PSF" in names else None
            photo_calib = PhotoCalib.from_hdu(hdul["PHOTOCALIB"]) if "PHOTOCALIB" in names else None
            visit_info = VisitInfo.from_hdu(hdul["VISITINFO"]) if "VISITINFO" in names else None
            ap_corr_map = object_from_hdu(hdul["APCORR"]) if "APCORR" in names else None
            detector = int(hdr.get("DETECTOR", -1))
            band = hdr.get("BAND", "") or None
        except ExposureFormatError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, OSError) as exc:
            raise ExposureFormatError(f"corrupt exposure file {path}: {exc}") from exc
    return Exposure(
        image,
        mask,
        variance,
        wcs,
        bbox,
        psf=psf,
        photo_calib=photo_calib,
        visit_info=visit_info,
        detector=None if detector < 0 else detector,
        band=band,
        ap_corr_map=ap_corr_map,
    )
