"""Difference imaging: PSF matching, subtraction and detection."""

from tasks.diffim.detect import DetectAndMeasureConfig, DetectAndMeasureTask
from tasks.diffim.kernel import KernelFitError, MatchingKernel
from tasks.diffim.subtract import SubtractImagesConfig, SubtractImagesTask

__all__ = [
    "DetectAndMeasureConfig",
    "DetectAndMeasureTask",
    "KernelFitError",
    "MatchingKernel",
    "SubtractImagesConfig",
    "SubtractImagesTask",
]
