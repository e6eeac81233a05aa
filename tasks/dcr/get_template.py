"""GetDcrTemplateTask: a visit-matched template from DCR sub-filter coadds.

Follows the Rubin ``lsst.ip.diffim.GetDcrTemplateTask`` document: the public
methods ``getOverlappingExposures(inputs)``, ``checkPatchList(patchList)``,
``getDcrModel(patchList, coaddRefs, visitInfo)`` and ``run(coaddExposures,
bbox, wcs, dataIds)`` keep their names and roles; `make_template` chains them
the way Rubin's ``runQuantum`` does.

A coadd reference is a `CoaddRef`: the data id (``tract``, ``patch``,
``subfilter``), the patch's pixel box and WCS (known from the sky map without
reading pixels) and a loader that reads the exposure only when needed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from astropy.wcs import WCS
from pydantic import Field

from tasks.core.base import NoWorkFound, Struct, Task, TaskConfig
from tasks.dcr.dcr_model import DcrModel
from tasks.dcr.errors import DcrError, MissingSubfilterError
from tasks.dcr.mosaic import Mosaic
from tasks.dcr.warp import warp_exposure
from tasks.images import Box2I, Exposure, MaskPlane, PhotoCalib, VisitInfo

if TYPE_CHECKING:
    from tasks.data.layout import DataLayout

__all__ = ["CoaddRef", "GetDcrTemplateConfig", "GetDcrTemplateTask"]


@dataclass
class CoaddRef:
    """A deferred reference to one DCR sub-filter coadd of a patch.

    Parameters
    ----------
    dataId : `dict`
        At least ``tract``, ``patch`` and ``subfilter``.
    bbox : `Box2I`
        Outer pixel box of the patch (parent coordinates of its WCS).
    wcs : `astropy.wcs.WCS`
        WCS of the patch.
    loader : callable
        Returns the `tasks.images.Exposure` when called.
    """

    dataId: dict[str, Any]
    bbox: Box2I
    wcs: WCS
    loader: Callable[[], Exposure] = field(repr=False)

    @classmethod
    def from_exposure(cls, exposure: Exposure, dataId: Mapping[str, Any]) -> CoaddRef:
        """Wrap an exposure already in memory."""
        return cls(dict(dataId), exposure.bbox, exposure.wcs, lambda: exposure)

    def get(self) -> Exposure:
        """Read the exposure (the Rubin ``DeferredDatasetHandle`` spelling)."""
        return self.loader()


def layout_coadd_refs(layout: DataLayout, band: str) -> list[CoaddRef]:
    """Return references to every DCR sub-filter coadd of a band in a layout (read on demand).

    Parameters
    ----------
    layout : `tasks.data.layout.DataLayout`
        The data layout holding the sky map and the coadds.
    band : `str`
        Band of the coadds.

    Returns
    -------
    refs : `list` [`CoaddRef`]
        Data ids ``tract``, ``patch``, ``band``, ``subfilter``; patch outer
        boxes and WCSs from the sky map.
    """
    skymap = layout.read_skymap()
    refs = []
    for tract, patch in layout.dcr_patches(band):
        info = skymap[tract].patch_info(patch)
        for k in layout.dcr_subfilters(tract, patch, band):
            path = layout.dcr_coadd_path(tract, patch, band, k)
            data_id = {"tract": tract, "patch": patch, "band": band, "subfilter": k}
            loader = functools.partial(layout.read_exposure_file, path)
            refs.append(CoaddRef(data_id, info.outer_bbox, info.wcs, loader))
    return refs


class GetDcrTemplateConfig(TaskConfig):
    """Configuration of `GetDcrTemplateTask`."""

    numSubfilters: int = Field(3, ge=1, description="Number of sub-filters of each DCR model.")
    subfilterConvention: Literal["endpoints", "mean"] = Field(
        "endpoints",
        description="Refraction of a sub-filter: 'endpoints' the average at its two end "
        "wavelengths (Rubin's ip_diffim), 'mean' the mean over its slice.",
    )
    templateBorderSize: int = Field(
        20, ge=0, description="Pixels added on every side of the detector box for the template."
    )
    cropMargin: int = Field(
        32,
        ge=16,
        description="Pixels kept around the detector outline when a patch is cropped before "
        "the DCR shifts and the warp (must exceed the largest DCR shift plus 12: the "
        "flagged frame of the shift, 7 + 2 pixels, and the Lanczos support, 3 pixels).",
    )
    mappingSpacing: int = Field(
        64, ge=4, description="Spacing (pixels) of the exact WCS mapping grid used by the warper."
    )
    mappingTolerance: float = Field(
        0.01, gt=0, description="Largest error (pixels) allowed for the interpolated WCS mapping."
    )


def _patch_key(dataId: Mapping[str, Any]) -> tuple[Hashable, Hashable]:
    return (dataId["tract"], dataId["patch"])


class GetDcrTemplateTask(Task):
    """Build the template for one detector of a visit from DCR models."""

    ConfigClass = GetDcrTemplateConfig
    _DefaultName = "getTemplate"
    config: GetDcrTemplateConfig

    # -- selection ------------------------------------------------------
    def getOverlappingExposures(self, inputs: Mapping[str, Any]) -> Struct:
        """Keep the coadd references whose patch overlaps the detector.

        Parameters
        ----------
        inputs : `dict`
            ``coaddExposureRefs`` (list of `CoaddRef`), ``bbox`` (`Box2I`, the
            detector), ``wcs`` (the detector's WCS); other keys are ignored.

        Returns
        -------
        result : `Struct`
            ``coaddExposureRefs`` and ``dataIds`` of the overlapping patches.

        Raises
        ------
        NoWorkFound
            If no patch overlaps the detector.
        """
        bbox: Box2I = inputs["bbox"].grown(self.config.templateBorderSize)
        wcs: WCS = inputs["wcs"]
        refs: Sequence[CoaddRef] = inputs["coaddExposureRefs"]
        # detector outline, densely sampled, projected into each patch (and
        # each patch outline into the detector: either polygon may hold the other)
        outline = _outline(bbox)
        ra, dec = wcs.all_pix2world(outline[:, 0], outline[:, 1], 0)
        keep = []
        for ref in refs:
            px, py = ref.wcs.all_world2pix(ra, dec, 0)
            overlaps = bool(np.any(ref.bbox.contains(px, py)))
            if not overlaps:
                corners = _outline(ref.bbox)
                pra, pdec = ref.wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
                dx, dy = wcs.all_world2pix(pra, pdec, 0)
                overlaps = bool(np.any(bbox.contains(dx, dy)))
            if overlaps:
                keep.append(self._cropped(ref, px, py))
        if not keep:
            raise NoWorkFound(f"no DCR coadd patch overlaps the detector box {inputs['bbox']}")
        return Struct(coaddExposureRefs=keep, dataIds=[ref.dataId for ref in keep])

    def _cropped(self, ref: CoaddRef, px: np.ndarray, py: np.ndarray) -> CoaddRef:
        """Restrict a reference to the part of its patch under the detector outline.

        The DCR shifts and the warp then only process the pixels the template
        needs; the margin covers the largest DCR shift and the interpolation
        support.
        """
        margin = self.config.cropMargin
        crop = Box2I.from_corners(
            int(np.floor(np.min(px))) - margin,
            int(np.floor(np.min(py))) - margin,
            int(np.ceil(np.max(px))) + margin,
            int(np.ceil(np.max(py))) + margin,
        ).intersection(ref.bbox)
        if crop is None or crop == ref.bbox:
            return ref
        loader = ref.loader
        # views: the crop is only read (the DCR model builds new arrays)
        return CoaddRef(ref.dataId, crop, ref.wcs, lambda: loader().subset(crop, copy=False))

    def checkPatchList(self, patchList: Mapping[Hashable, Sequence[Hashable]]) -> None:
        """Check that every patch has all of its sub-filters.

        Parameters
        ----------
        patchList : `dict`
            Tract → list of patch ids, one entry per sub-filter coadd found.

        Raises
        ------
        MissingSubfilterError
            Naming the first patch whose count differs from ``numSubfilters``.
        """
        for tract, patches in patchList.items():
            for patch in sorted(set(patches), key=str):
                count = list(patches).count(patch)
                if count != self.config.numSubfilters:
                    raise MissingSubfilterError(
                        f"tract {tract} patch {patch}: found {count} DCR sub-filter coadds, "
                        f"expected {self.config.numSubfilters}"
                    )

    def getDcrModel(
        self,
        patchList: Mapping[Hashable, Sequence[Hashable]],
        coaddRefs: Sequence[CoaddRef],
        visitInfo: VisitInfo,
    ) -> list[Exposure]:
        """Build the DCR-matched template of each patch for the visit.

        Parameters
        ----------
        patchList : `dict`
            Tract → patch ids (as for `checkPatchList`).
        coaddRefs : `list` [`CoaddRef`]
            Sub-filter coadd references of the overlapping patches.
        visitInfo : `tasks.images.VisitInfo`
            The science visit.

        Returns
        -------
        coaddExposures : `list` [`tasks.images.Exposure`]
            One matched template per patch, in ``patchList`` order.
        """
        exposures = []
        for tract, patches in patchList.items():
            for patch in dict.fromkeys(patches):
                refs = [r for r in coaddRefs if _patch_key(r.dataId) == (tract, patch)]
                refs.sort(key=lambda r: r.dataId["subfilter"])
                subfilter_ids = [r.dataId["subfilter"] for r in refs]
                if subfilter_ids != list(range(self.config.numSubfilters)):
                    raise MissingSubfilterError(
                        f"tract {tract} patch {patch}: sub-filters {subfilter_ids}, expected "
                        f"0..{self.config.numSubfilters - 1}"
                    )
                model = DcrModel(
                    [r.get() for r in refs],
                    visitInfo.band,
                    name=f"tract {tract} patch {patch}",
                    convention=self.config.subfilterConvention,
                )
                with self.timer("buildMatchedTemplate"):
                    exposures.append(model.build_matched_template(visitInfo))
        return exposures

    # -- warping and mosaicking -------------------------------------------
    def run(
        self,
        coaddExposures: Sequence[Exposure],
        bbox: Box2I,
        wcs: WCS,
        dataIds: Sequence[Mapping[str, Any]],
        **kwargs: Any,
    ) -> Struct:
        """Warp the patch templates onto the detector and average the overlaps.

        Parameters
        ----------
        coaddExposures : `list` [`tasks.images.Exposure`]
            Matched templates, one per patch (any tracts).
        bbox : `Box2I`
            Detector box; the template covers it grown by ``templateBorderSize``.
        wcs : `astropy.wcs.WCS`
            Detector WCS.
        dataIds : `list` [`dict`]
            Data ids (``tract``, ``patch``) of ``coaddExposures``.

        Returns
        -------
        result : `Struct`
            ``template`` (`tasks.images.Exposure`; also ``outputExposure``):
            weighted mean of the warped patches with weights ``V**-0.5``,
            uncovered pixels ``NO_DATA``; PSF and calibration of the patch
            covering most of the detector (fluxes rescaled to its calibration).
        """
        if not coaddExposures:
            raise NoWorkFound("no coadd exposures to warp")
        out_box = bbox.grown(self.config.templateBorderSize)
        mosaic = Mosaic(out_box.shape)
        coverage = []
        calib = None
        with self.timer("warp"):
            for exp in coaddExposures:
                warped = warp_exposure(
                    exp,
                    wcs,
                    out_box,
                    spacing=self.config.mappingSpacing,
                    tolerance=self.config.mappingTolerance,
                )
                scale = 1.0
                if calib is None and exp.photo_calib is not None:
                    calib = exp.photo_calib
                if calib is not None and exp.photo_calib is not None:
                    scale = exp.photo_calib.calibration_mean / calib.calibration_mean
                coverage.append(mosaic.add(warped.image, warped.variance, warped.mask, scale))
        image, variance, mask = mosaic.finish(int(MaskPlane.NO_DATA))
        best = coaddExposures[int(np.argmax(coverage))]
        template = Exposure(
            image,
            mask,
            variance,
            wcs,
            out_box,
            psf=best.psf,
            photo_calib=calib if calib is not None else PhotoCalib(1.0),
            band=best.band,
        )
        self.metadata["nPatches"] = len(coaddExposures)
        self.metadata["coveredFraction"] = mosaic.covered_fraction
        if not any(coverage):
            raise NoWorkFound("the patches overlap the detector box only where they have no data")
        return Struct(template=template, outputExposure=template, dataIds=list(dataIds))

    # -- the chain ----------------------------------------------------------
    def make_template(
        self,
        coadd_refs: Sequence[CoaddRef],
        bbox: Box2I,
        wcs: WCS,
        visit_info: VisitInfo,
    ) -> Struct:
        """Select, check, DCR-match and warp: the whole task for one detector.

        Parameters
        ----------
        coadd_refs : `list` [`CoaddRef`]
            Candidate sub-filter coadds (e.g. all patches near the detector).
        bbox : `Box2I`
            Detector box.
        wcs : `astropy.wcs.WCS`
            Detector WCS.
        visit_info : `tasks.images.VisitInfo`
            The science visit.

        Returns
        -------
        result : `Struct`
            As `run`.
        """
        if visit_info is None:
            raise DcrError("a DCR template needs the visit's VisitInfo")
        inputs = {"coaddExposureRefs": coadd_refs, "bbox": bbox, "wcs": wcs}
        overlapping = self.getOverlappingExposures(inputs)
        patch_list: dict[Hashable, list[Hashable]] = {}
        for data_id in overlapping.dataIds:
            patch_list.setdefault(data_id["tract"], []).append(data_id["patch"])
        self.checkPatchList(patch_list)
        with self.timer("getDcrModel"):
            exposures = self.getDcrModel(patch_list, overlapping.coaddExposureRefs, visit_info)
        data_ids = [
            {"tract": tract, "patch": patch}
            for tract, patches in patch_list.items()
            for patch in dict.fromkeys(patches)
        ]
        return self.run(exposures, bbox, wcs, data_ids)


def _outline(box: Box2I, n: int = 16) -> np.ndarray:
    """Points along the outer edge of a box (pixel edges), ``(4 n, 2)``."""
    xa, xb = box.x0 - 0.5, box.x1 + 0.5
    ya, yb = box.y0 - 0.5, box.y1 + 0.5
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([xa + t * (xb - xa), np.full(n, xb), xb - t * (xb - xa), np.full(n, xa)])
    ys = np.concatenate([np.full(n, ya), ya + t * (yb - ya), np.full(n, yb), yb - t * (yb - ya)])
    # nudge inside so the half-open contains() accepts the far edges
    xs = np.clip(xs, xa + 1e-6, xb - 1e-6)
    ys = np.clip(ys, ya + 1e-6, yb - 1e-6)
    return np.column_stack([xs, ys])
