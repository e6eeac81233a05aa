"""Run the per-visit chain over a data directory, with a progress bar and a summary.

A visit/detector that fails is reported and the run goes on with the
others; a visit/detector already in the APDB is skipped, so rerunning the
same command only does what is left.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tasks.data.layout import DataLayout
from tasks.pipeline.kernels import warm_up
from tasks.pipeline.stages import RunInputs
from tasks.pipeline.visit import STAGES, ProcessVisitConfig, ProcessVisitTask, VisitResult

__all__ = ["RunSummary", "run_pipeline"]

_log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did.

    Attributes
    ----------
    processed, skipped : `list` [`tuple` [`int`, `int`]]
        Visit/detectors processed now, and those already in the APDB.
    failed : `dict`
        (visit, detector) → error message.
    """

    processed: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
    failed: dict[tuple[int, int], str] = field(default_factory=dict)
    n_dia_sources: int = 0
    n_new_dia_objects: int = 0
    n_ss_matches: int = 0
    n_alerts: int = 0
    alert_files: list[Path] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    kernel_seconds: float = 0.0
    kernels_compiled: int = 0

    def add(self, result: VisitResult) -> None:
        """Add the result of one `ProcessVisitTask.run`."""
        self.processed.append((result.visit, result.detector))
        self.n_dia_sources += result.nDiaSources
        self.n_new_dia_objects += result.nNewDiaObjects
        self.n_ss_matches += result.nSsMatches
        self.n_alerts += result.nAlerts
        if result.alertFile is not None:
            self.alert_files.append(Path(result.alertFile))
        for stage, seconds in result.timings.items():
            self.stage_seconds[stage] += seconds
        self.notes += [f"visit {result.visit} det {result.detector}: {n}" for n in result.notes]

    def format(self) -> str:
        """Human-readable summary table."""
        lines = [
            f"visits/detectors processed: {len(self.processed)}"
            f"   skipped (already stored): {len(self.skipped)}   failed: {len(self.failed)}",
            f"DiaSources: {self.n_dia_sources}   new DiaObjects: {self.n_new_dia_objects}"
            f"   SSO matches: {self.n_ss_matches}   alerts: {self.n_alerts}",
        ]
        if self.processed:
            lines.append("time per stage (s, total over visits):")
            total = sum(self.stage_seconds.values())
            for stage in STAGES:
                if stage in self.stage_seconds:
                    seconds = self.stage_seconds[stage]
                    share = 100 * seconds / total if total else 0.0
                    lines.append(f"  {stage:<17} {seconds:8.2f}  ({share:4.1f} %)")
        if self.kernels_compiled:
            lines.append(
                f"compiling kernels (first run only): {self.kernel_seconds:.1f} s "
                "(not in the stage times)"
            )
        lines.append(f"wall time: {self.wall_seconds:.1f} s")
        for (visit, detector), message in sorted(self.failed.items()):
            lines.append(f"FAILED visit {visit} detector {detector}: {message}")
        lines += self.notes
        return "\n".join(lines)


def run_pipeline(
    layout: DataLayout,
    apdb: Any,
    config: ProcessVisitConfig | None = None,
    visits: list[int] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Process every visit/detector of a data directory into the APDB.

    Parameters
    ----------
    layout : `DataLayout`
        The data directory.
    apdb : `apdb.Apdb`
        The database.
    config : `ProcessVisitConfig`, optional
        Configuration of the chain; alerts default to the layout's
        ``outputs/alerts`` folder.
    visits : `list` [`int`], optional
        Restrict to these visits.
    progress : `bool`, optional
        Show a tqdm progress bar.

    Returns
    -------
    summary : `RunSummary`
    """
    start = time.perf_counter()
    if config is None:
        config = ProcessVisitConfig()
        config.packageAlerts.alertWriteLocation = str(layout.output_root / "alerts")
    task = ProcessVisitTask(config=config)
    inputs = RunInputs(layout)
    work = [
        (visit, detector)
        for visit in (visits if visits is not None else layout.visits())
        for detector in layout.detectors(visit)
    ]
    summary = RunSummary()
    if any(not apdb.contains_visit_detector(v, d) for v, d in work):
        # Compile the numba kernels before the first visit (or load them from
        # numba's cache): the first run's compilation is not booked to a stage.
        kernels = warm_up(report=print if progress else _log.info)
        summary.kernel_seconds = kernels.seconds
        summary.kernels_compiled = kernels.n_compiled
    bar = tqdm(work, desc="visits", unit="visit", disable=not progress)
    for visit, detector in bar:
        bar.set_postfix_str(f"visit {visit} det {detector}")
        if apdb.contains_visit_detector(visit, detector):
            summary.skipped.append((visit, detector))
            continue
        try:
            result = task.run(inputs, visit, detector, apdb)
        except Exception as exc:  # noqa: BLE001 - one visit must not stop the night
            message = f"{type(exc).__name__}: {exc}"
            summary.failed[(visit, detector)] = message
            _log.error("visit %d detector %d failed: %s", visit, detector, message)
            _log.debug("%s", traceback.format_exc())
            continue
        summary.add(result)
    summary.wall_seconds = time.perf_counter() - start
    return summary
