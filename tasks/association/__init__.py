"""Association of DiaSources with DiaObjects and Solar System objects."""

from tasks.association.association import (
    AssociationConfig,
    AssociationError,
    AssociationTask,
)

__all__ = ["AssociationConfig", "AssociationError", "AssociationTask"]
