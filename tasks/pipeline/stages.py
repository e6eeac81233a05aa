"""Adapters from the on-disk data layout to each pipeline task.

Every stage of the per-visit chain is owned by another module; the
functions here only gather that stage's inputs from a `DataLayout` (and
the results of earlier stages) and call the task.  Per-run inputs that do
not change between visits (isolated-star catalogues, DCR coadd references)
are read once and cached in `RunInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tasks.core.base import NoWorkFound, TaskError
from tasks.data.layout import DataLayout
from tasks.images import Exposure

__all__ = ["RunInputs", "detect", "subtract", "dcr_template", "template"]


@dataclass
class RunInputs:
    """Inputs shared by all visits of a run, read lazily once."""

    layout: DataLayout
    _isolated: tuple[dict[int, Any], dict[int, Any]] | None = None
    _coadd_refs: dict[str, list[Any]] = field(default_factory=dict)

    def isolated_stars(self) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
        """Per-tract isolated-star catalogues and sources (empty dicts if none)."""
        if self._isolated is None:
            tracts = self.layout.isolated_star_tracts()
            cats = {t: self.layout.read_isolated_star_cat(t) for t in tracts}
            srcs = {t: self.layout.read_isolated_star_sources(t) for t in tracts}
            self._isolated = (cats, srcs)
        return self._isolated

    def coadd_refs(self, band: str) -> list[Any]:
        """Return references to every DCR sub-filter coadd of a band (read on demand)."""
        if band not in self._coadd_refs:
            from tasks.dcr.get_template import layout_coadd_refs

            refs = layout_coadd_refs(self.layout, band)
            self._coadd_refs[band] = refs
        return self._coadd_refs[band]

    def ss_predictions(self, visit: int) -> pd.DataFrame | None:
        """Predicted Solar System positions of a visit, `None` when there are none."""
        if self.layout.has_ss_predictions(visit):
            return self.layout.read_ss_predictions(visit)
        return None


def detect(task: Any, exposure: Exposure, science: Exposure | None = None) -> pd.DataFrame:
    """Run detection and measurement (``tasks.diffim.detect``) on an exposure.

    Parameters
    ----------
    task : `tasks.core.base.Task`
        The detection task.
    exposure : `tasks.images.Exposure`
        A science image (gives the single-frame ``src`` table of the final
        characterization) or a difference image (gives DiaSources).
    science : `tasks.images.Exposure`, optional
        With a difference image: the science exposure (``scienceFlux``).
    """
    result = task.run(exposure, science)
    table = getattr(result, "diaSources" if science is not None else "sources", None)
    if not isinstance(table, pd.DataFrame):
        raise TaskError(f"detection returned no source table ({result!r})")
    return table


def dcr_template(task: Any, inputs: RunInputs, exposure: Exposure) -> Exposure:
    """Build the DCR-matched template of a detector with `GetDcrTemplateTask`.

    Raises
    ------
    NoWorkFound
        If no DCR coadd of the band overlaps the detector.
    """
    info = exposure.visit_info
    refs = inputs.coadd_refs(exposure.band or info.band)
    if not refs:
        raise NoWorkFound(f"no DCR coadds in band {exposure.band or info.band}")
    selected = task.getOverlappingExposures(
        {"coaddExposureRefs": refs, "bbox": exposure.bbox, "wcs": exposure.wcs}
    )
    patch_list: dict[Any, list[Any]] = {}
    for ref in selected.coaddExposureRefs:
        patch_list.setdefault(ref.dataId["tract"], []).append(ref.dataId["patch"])
    task.checkPatchList(patch_list)
    coadds = task.getDcrModel(patch_list, selected.coaddExposureRefs, info)
    data_ids = [
        {"tract": tract, "patch": patch}
        for tract, patches in patch_list.items()
        for patch in dict.fromkeys(patches)
    ]
    return task.run(coadds, exposure.bbox, exposure.wcs, data_ids).template


def template(
    task: Any, inputs: RunInputs, exposure: Exposure, visit: int, detector: int, notes: list[str]
) -> Exposure:
    """Return the DCR template when the band has DCR coadds, else the plain template.

    The plain template (`tasks.pipeline.plain_template`) is a deep coadd or
    a per-visit template image warped onto the exposure; taking it is noted.
    """
    band = exposure.band or exposure.visit_info.band
    if inputs.layout.dcr_patches(band):
        return dcr_template(task, inputs, exposure)
    from tasks.pipeline.plain_template import plain_template

    result = plain_template(
        inputs.layout, exposure, visit, detector, border=task.config.templateBorderSize
    )
    notes.append(f"no DCR coadds in band {band}: plain template")
    return result


def subtract(task: Any, template: Exposure, exposure: Exposure) -> Exposure:
    """Difference image ``science - matched template`` from the subtraction task."""
    return task.run(template, exposure).difference
