"""DCR templates: refraction, DCR models and the template task."""

from tasks.dcr.dcr_model import DcrModel
from tasks.dcr.errors import DcrError, EmptyPatchError, MissingSubfilterError, WavelengthRangeError
from tasks.dcr.get_template import CoaddRef, GetDcrTemplateConfig, GetDcrTemplateTask
from tasks.dcr.refraction import differential_refraction, refraction

__all__ = [
    "CoaddRef",
    "DcrError",
    "DcrModel",
    "EmptyPatchError",
    "GetDcrTemplateConfig",
    "GetDcrTemplateTask",
    "MissingSubfilterError",
    "WavelengthRangeError",
    "differential_refraction",
    "refraction",
]
