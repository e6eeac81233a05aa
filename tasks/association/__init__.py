"""Association of DiaSources with DiaObjects and Solar System objects."""

from tasks.association.association import (
    AssociationConfig,
    AssociationError,
    AssociationTask,
)
from tasks.association.ssoassociation import (
    SsSingleFrameAssociationConfig,
    SsSingleFrameAssociationTask,
)

__all__ = [
    "AssociationConfig",
    "AssociationError",
    "AssociationTask",
    "SsSingleFrameAssociationConfig",
    "SsSingleFrameAssociationTask",
]
