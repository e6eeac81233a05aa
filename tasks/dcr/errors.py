"""Errors raised while building DCR templates."""

from __future__ import annotations

from tasks.core.base import TaskError

__all__ = ["DcrError", "WavelengthRangeError", "MissingSubfilterError", "EmptyPatchError"]


class DcrError(TaskError):
    """Base class of errors raised by the DCR template code."""


class WavelengthRangeError(DcrError, ValueError):
    """A wavelength lies outside the validity range of the refraction formula."""


class MissingSubfilterError(DcrError):
    """A patch of a DCR model does not have the configured number of sub-filters."""


class EmptyPatchError(DcrError):
    """A patch of a DCR model holds no finite, unmasked pixel."""
