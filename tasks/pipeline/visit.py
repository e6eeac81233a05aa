"""ProcessVisitTask: the whole alert-production chain for one visit/detector.

    science exposure ── detection (src) ── final characterization (PSF, aperture corrections)
        ── DCR template ── subtraction ── detection (DiaSources)
        ── DiaPipelineTask (SSO association, association, statistics, forced photometry, store)
        ── PackageAlertsTask (alerts: Avro file, optionally Kafka)

Each stage is timed (``{stage}Duration`` in the metadata); the result
carries the counts the run summary adds up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.alerts import PackageAlertsConfig, PackageAlertsTask
from tasks.characterize import (
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationTask,
    write_final_characterization,
)
from tasks.characterize.own_stars import isolated_stars_from_detections
from tasks.core.base import NoWorkFound, Result, Struct, Task, TaskConfig
from tasks.dcr.get_template import GetDcrTemplateConfig, GetDcrTemplateTask
from tasks.diffim.detect import DetectAndMeasureTask
from tasks.diffim.subtract import SubtractImagesTask
from tasks.pipeline import stages
from tasks.pipeline.diapipe import DiaPipelineConfig, DiaPipelineResult, DiaPipelineTask
from tasks.pipeline.stages import RunInputs

__all__ = ["STAGES", "ProcessVisitConfig", "ProcessVisitTask", "VisitResult"]

STAGES = (
    "read",
    "detectScience",
    "characterize",
    "template",
    "subtract",
    "detectDifference",
    "diaPipe",
    "alerts",
    "writeOutputs",
)
"""Stage names, in order (keys of the per-stage timings)."""


@dataclass
class VisitResult(Result):
    """What `ProcessVisitTask.run` did for one visit/detector.

    Attributes
    ----------
    visit, detector : `int`
        What was processed.
    nDiaSources : `int`
        DiaSources stored.
    nNewDiaObjects : `int`
        DiaObjects created.
    nSsMatches : `int`
        DiaSources matched to Solar System objects.
    nAlerts : `int`
        Alerts written (0 when alert packaging is off).
    alertFile : `pathlib.Path` or `None`
        The Avro alert file, if any.
    timings : `dict` [`str`, `float`]
        Seconds per stage (`STAGES`).
    notes : `list` [`str`]
        Fallbacks taken (e.g. no isolated-star catalog).
    diaPipe : `DiaPipelineResult`
        The DIA pipeline's result.
    alerts : `object` or `None`
        The alert packager's result (`None` when it did not run).
    """

    visit: int
    detector: int
    nDiaSources: int
    nNewDiaObjects: int
    nSsMatches: int
    nAlerts: int
    alertFile: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    diaPipe: DiaPipelineResult | None = None
    alerts: Any = None


class ProcessVisitConfig(TaskConfig):
    """Configuration of `ProcessVisitTask`."""

    finalizeCharacterization: FinalizeCharacterizationConfig = (
        FinalizeCharacterizationTask.makeField("Final PSF and aperture corrections.")
    )
    getTemplate: GetDcrTemplateConfig = GetDcrTemplateTask.makeField(
        "DCR-matched template for the detector."
    )
    diaPipe: DiaPipelineConfig = DiaPipelineTask.makeField(
        "Association, statistics, forced photometry and store."
    )
    packageAlerts: PackageAlertsConfig = PackageAlertsTask.makeField("Alert packaging.")
    doFinalizeCharacterization: bool = Field(
        True, description="Refit PSF and aperture corrections from isolated stars."
    )
    doPackageAlerts: bool = Field(True, description="Write (and/or produce) alerts.")
    doWriteOutputs: bool = Field(
        True,
        description=(
            "Write the intermediate products into the data layout's output directory: "
            "final PSF and aperture corrections, template, difference image and the "
            "detected DiaSources (what `apdb-pipeline associate` reads back)."
        ),
    )


class ProcessVisitTask(Task):
    """Run the alert-production chain on one visit/detector."""

    ConfigClass = ProcessVisitConfig
    _DefaultName = "processVisit"
    _subtask_classes = {
        "finalizeCharacterization": FinalizeCharacterizationTask,
        "getTemplate": GetDcrTemplateTask,
        "diaPipe": DiaPipelineTask,
        "packageAlerts": PackageAlertsTask,
    }
    config: ProcessVisitConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._subtask_classes:
            self.makeSubtask(name)
        self._detection = None
        self._subtraction = None

    @property
    def detection(self) -> DetectAndMeasureTask:
        """The detection task (built on first use)."""
        if self._detection is None:
            self._detection = DetectAndMeasureTask(name="detection", parentTask=self)
        return self._detection

    @property
    def subtraction(self) -> SubtractImagesTask:
        """The subtraction task (built on first use)."""
        if self._subtraction is None:
            self._subtraction = SubtractImagesTask(name="subtraction", parentTask=self)
        return self._subtraction

    def run(self, inputs: RunInputs, visit: int, detector: int, apdb: Any) -> VisitResult:
        """Process one visit/detector and store it in the APDB.

        Parameters
        ----------
        inputs : `RunInputs`
            The data directory and per-run caches.
        visit, detector : `int`
            What to process.
        apdb : `apdb.Apdb`
            The database.

        Returns
        -------
        result : `VisitResult`
            Counts, the alert file, stage timings, notes and the sub-results.
        """
        self.emptyMetadata()
        notes: list[str] = []
        layout = inputs.layout
        with self.timer("read"):
            exposure = layout.read_exposure(visit, detector)
            if exposure.visit_info is None:
                exposure.visit_info = layout.read_visit_info(visit)
            if exposure.detector is None:
                exposure.detector = detector
            ssp = inputs.ss_predictions(visit)
        band = exposure.band or exposure.visit_info.band

        with self.timer("detectScience"):
            src = stages.detect(self.detection, exposure)
        with self.timer("characterize"):
            final = self._characterize(inputs, visit, detector, band, exposure, src, notes)
        with self.timer("template"):
            template = stages.template(self.getTemplate, inputs, exposure, visit, detector, notes)
        with self.timer("subtract"):
            diffim = stages.subtract(self.subtraction, template, exposure)
        with self.timer("detectDifference"):
            dia_sources = stages.detect(self.detection, diffim, science=exposure)
        if self.config.doWriteOutputs:
            # Written before the store: a visit that fails later can be rerun
            # or associated alone from these files.
            with self.timer("writeOutputs"):
                self._write_outputs(layout, visit, detector, final, template, diffim, dia_sources)
        with self.timer("diaPipe"):
            dia = self.diaPipe.run(dia_sources, diffim, exposure, template, apdb, ssp)
        alerts = None
        if self.config.doPackageAlerts:
            with self.timer("alerts"):
                alerts = self.packageAlerts.run(
                    dia.associatedDiaSources,
                    dia.diaObjects,
                    dia.diaSourceHistory,
                    dia.diaForcedSourceHistory,
                    diffim,
                    exposure,
                    template,
                    ssSrc=dia.ssSources,
                    visit=visit,
                    detector=detector,
                )
        timings = {
            stage: float(self.metadata[f"{stage}Duration"])
            for stage in STAGES
            if f"{stage}Duration" in self.metadata
        }
        return VisitResult(
            visit=visit,
            detector=detector,
            nDiaSources=len(dia.associatedDiaSources),
            nNewDiaObjects=int(dia.nNewDiaObjects),
            nSsMatches=int(dia.nAssociatedSsObjects),
            nAlerts=0 if alerts is None else int(alerts.nAlerts),
            alertFile=None if alerts is None else alerts.alertFile,
            timings=timings,
            notes=notes,
            diaPipe=dia,
            alerts=alerts,
        )

    def _characterize(
        self,
        inputs: RunInputs,
        visit: int,
        detector: int,
        band: str,
        exposure: Any,
        src: Any,
        notes: list[str],
    ) -> Struct | None:
        """Put the final PSF and aperture corrections on the exposure (or keep its own).

        Returns the final characterization's result, or `None` when it was
        not run or found no work.
        """
        if not self.config.doFinalizeCharacterization:
            return None
        cats, srcs = inputs.isolated_stars()
        try:
            if not cats:  # no isolated-star catalog: the image's own isolated detections
                cats, srcs = isolated_stars_from_detections(src, visit, detector, band)
                notes.append("no isolated-star catalog: PSF stars from the image's detections")
            result = self.finalizeCharacterization.run(
                visit, band, cats, srcs, {detector: src}, {detector: exposure}
            )
        except NoWorkFound as exc:
            notes.append(f"final characterization skipped: {exc}")
            self.log.warning("visit %d detector %d: %s", visit, detector, notes[-1])
            return None
        psf = result.psfs.get(detector)
        if psf is None:
            row = result.psf_ap_corr_cat
            reason = row["reason"].iloc[0] if len(row) and "reason" in row.columns else "unknown"
            notes.append(f"final PSF fit failed ({reason}); kept the exposure's PSF")
            self.log.warning("visit %d detector %d: %s", visit, detector, notes[-1])
            return result
        exposure.psf = psf
        exposure.ap_corr_map = result.ap_corr_maps.get(detector)
        return result

    @staticmethod
    def _write_outputs(
        layout: Any,
        visit: int,
        detector: int,
        final: Struct | None,
        template: Any,
        diffim: Any,
        dia_sources: Any,
    ) -> None:
        """Write the visit/detector's intermediate products into the data layout."""
        if final is not None:
            write_final_characterization(layout, visit, final)
        if template is not None:
            layout.write_output_exposure("template", template, visit, detector)
        layout.write_output_exposure("diffim", diffim, visit, detector)
        layout.write_output_table("diaSources", dia_sources, visit, detector)
