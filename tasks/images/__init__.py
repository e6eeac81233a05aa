"""The image model: exposures, PSFs, calibrations, visit metadata and bands.

Everything the image-side tasks exchange.
"""

from tasks.images.calib import PhotoCalib
from tasks.images.errors import ExposureFormatError, ImageError
from tasks.images.exposure import Exposure
from tasks.images.exposure_io import read_exposure, write_exposure
from tasks.images.filters import BANDS, Band, get_band, subfilter_wavelengths
from tasks.images.geom import Box2I
from tasks.images.mask import MASK_DTYPE, MaskPlane, bits_from_names, mask_bits
from tasks.images.persistence import (
    object_from_hdu,
    object_to_hdu,
    params_from_hdu,
    params_to_hdu,
    register_persistable,
)
from tasks.images.psf import DoubleGaussianPsf, GaussianPsf, Psf, psf_from_hdu, psf_to_hdu
from tasks.images.visit_info import RUBIN_OBSERVATORY, VisitInfo, Weather
from tasks.images.wcs_utils import make_tan_wcs, shift_wcs, sky_direction_in_pixels

__all__ = [
    "BANDS",
    "Band",
    "Box2I",
    "DoubleGaussianPsf",
    "Exposure",
    "ExposureFormatError",
    "GaussianPsf",
    "ImageError",
    "MASK_DTYPE",
    "MaskPlane",
    "PhotoCalib",
    "Psf",
    "RUBIN_OBSERVATORY",
    "VisitInfo",
    "Weather",
    "get_band",
    "make_tan_wcs",
    "bits_from_names",
    "mask_bits",
    "object_from_hdu",
    "object_to_hdu",
    "params_from_hdu",
    "params_to_hdu",
    "psf_from_hdu",
    "psf_to_hdu",
    "read_exposure",
    "register_persistable",
    "shift_wcs",
    "sky_direction_in_pixels",
    "subfilter_wavelengths",
    "write_exposure",
]
