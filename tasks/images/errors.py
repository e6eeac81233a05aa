"""Errors of the image model."""

from __future__ import annotations

from tasks.core.base import TaskError

__all__ = ["ImageError", "ExposureFormatError"]


class ImageError(TaskError):
    """Invalid image data or a request the image model cannot honour."""


class ExposureFormatError(ImageError):
    """A file is not a valid exposure (missing extension, corrupt header, unknown type)."""
