"""Errors of the ingest package."""

from __future__ import annotations

from tasks.core.base import TaskError

__all__ = ["IngestError"]


class IngestError(TaskError):
    """A user's file, column mapping or instrument profile cannot be used."""
