"""Forced photometry at DiaObject positions (ForcedPhotCcdFromDataFrameTask)."""

from tasks.forcedphot.forced_phot import (
    ForcedPhotCcdFromDataFrameConfig,
    ForcedPhotCcdFromDataFrameTask,
    ForcedPhotError,
)
from tasks.forcedphot.psf_flux import PsfFluxResult, measure_psf_flux, psf_images_at

__all__ = [
    "ForcedPhotCcdFromDataFrameConfig",
    "ForcedPhotCcdFromDataFrameTask",
    "ForcedPhotError",
    "PsfFluxResult",
    "measure_psf_flux",
    "psf_images_at",
]
