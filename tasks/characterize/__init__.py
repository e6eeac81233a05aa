"""Final characterization: pixel-grid PSF model and aperture corrections per detector.

Importing this package registers `PixelGridPsf` and `ApCorrMap` with the
exposure model's FITS persistence, so exposures carrying them can be read.
"""

from tasks.characterize.apcorr import ApCorrMap, measure_aperture_corrections
from tasks.characterize.chebyshev import ChebyshevBoundedField
from tasks.characterize.finalize import (
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationTask,
)
from tasks.characterize.persist import (
    read_final_psf_and_ap_corr_map,
    read_psf_and_ap_corr_map,
    write_final_characterization,
    write_psf_and_ap_corr_map,
)
from tasks.characterize.psf_fit import PsfFitError, fit_pixel_grid_psf
from tasks.characterize.psf_model import PixelGridPsf

__all__ = [
    "ApCorrMap",
    "ChebyshevBoundedField",
    "FinalizeCharacterizationConfig",
    "FinalizeCharacterizationTask",
    "PixelGridPsf",
    "PsfFitError",
    "fit_pixel_grid_psf",
    "measure_aperture_corrections",
    "read_final_psf_and_ap_corr_map",
    "read_psf_and_ap_corr_map",
    "write_final_characterization",
    "write_psf_and_ap_corr_map",
]
