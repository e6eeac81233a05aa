"""``apdb-pipeline check DATA_DIR``: what a data directory holds and what each visit lacks.

`layout_report` inspects a `tasks.data.layout.DataLayout` without running
anything: the structural problems of `DataLayout.check`, a summary of what
the directory holds (visits, bands, DCR and deep coadds, isolated stars,
Solar System predictions) and, for every visit/detector, the template and
PSF-star sources the pipeline would use, or what it is missing.  `run`
prints the same report and stops (non-zero exit) when no visit can run.

A visit/detector can run when its exposure exists, it is in
``visits.parquet``, and a template exists for its band: DCR sub-filter
coadds (with ``skymap.yaml``), else a plain template (a deep coadd of the
band, or ``templates/visit_V/det_D.fits``).  PSF stars come from the
isolated-star catalog when the layout has one, else from the image's own
detections.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tasks.data.layout import DataLayout, DataLayoutError

__all__ = ["VisitStatus", "LayoutReport", "layout_report", "configure_parser", "main"]


@dataclass
class VisitStatus:
    """What one visit/detector has and lacks.

    Attributes
    ----------
    visit, detector : `int`
    band : `str` or `None`
        From ``visits.parquet`` (`None` when the visit is not listed).
    template : `str` or `None`
        ``"dcr"``, ``"plain"`` or `None` when no template can be made.
    psf_stars : `str`
        ``"isolated-star catalog"`` or ``"own detections"``.
    ss_predictions : `bool`
    missing : `list` [`str`]
        Why the visit/detector cannot run (empty when it can).
    """

    visit: int
    detector: int
    band: str | None
    template: str | None
    psf_stars: str
    ss_predictions: bool
    missing: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        """Whether the pipeline can process this visit/detector."""
        return not self.missing


@dataclass
class LayoutReport:
    """Report on a data directory (see `layout_report`)."""

    root: Path
    problems: list[str]
    holds: dict[str, str]
    visits: list[VisitStatus]

    @property
    def runnable(self) -> list[VisitStatus]:
        """The visit/detectors that can run."""
        return [v for v in self.visits if v.runnable]

    def format(self) -> str:
        """Human-readable report (what `apdb-pipeline check` prints)."""
        lines = [f"data directory {self.root}"]
        lines += [f"  {key:<22} {value}" for key, value in self.holds.items()]
        if self.problems:
            lines.append("problems:")
            lines += [f"  {p}" for p in self.problems]
        if self.visits:
            lines.append("visits:")
        for v in self.visits:
            head = f"  visit {v.visit} det {v.detector} band {v.band or '?'}: "
            if v.runnable:
                extra = ", SSO predictions" if v.ss_predictions else ""
                lines.append(
                    f"{head}ready (template: {v.template}, PSF stars: {v.psf_stars}{extra})"
                )
            else:
                lines.append(f"{head}cannot run: {'; '.join(v.missing)}")
        n_ok = len(self.runnable)
        lines.append(f"{n_ok} of {len(self.visits)} visit/detectors can run")
        return "\n".join(lines)


def _plain_template_available(layout: DataLayout, band: str, visit: int, detector: int) -> bool:
    """Whether a plain template (deep coadd of the band or a per-visit template) exists."""
    from tasks.pipeline.plain_template import plain_template_paths

    return bool(plain_template_paths(layout, band, visit, detector))


def layout_report(layout: DataLayout) -> LayoutReport:
    """Inspect a data directory (nothing is run, exposures are not opened).

    Parameters
    ----------
    layout : `DataLayout`

    Returns
    -------
    report : `LayoutReport`
    """
    problems = layout.check() if layout.root.is_dir() else [f"{layout.root} is not a directory"]
    bands: dict[int, str] = {}
    try:
        table = layout.read_visit_table()
        bands = {int(v): str(b) for v, b in zip(table["visit"], table["band"], strict=True)}
    except DataLayoutError:
        pass  # already among the problems
    has_skymap = layout.skymap_path.exists()
    iso_tracts = layout.isolated_star_tracts()
    psf_stars = "isolated-star catalog" if iso_tracts else "own detections"
    statuses: list[VisitStatus] = []
    visits = sorted(set(layout.visits()) | set(bands))
    for visit in visits:
        detectors = layout.detectors(visit) or [None]
        for detector in detectors:
            band = bands.get(visit)
            missing = []
            if detector is None:
                missing.append("no exposure under exposures/")
            if band is None:
                missing.append("not in visits.parquet")
            template = None
            if band is not None:
                if layout.dcr_patches(band) and has_skymap:
                    template = "dcr"
                elif detector is not None and _plain_template_available(
                    layout, band, visit, detector
                ):
                    template = "plain"
                else:
                    why = (
                        "DCR coadds but no skymap.yaml"
                        if layout.dcr_patches(band)
                        else "no DCR coadds"
                    )
                    missing.append(
                        f"no template in band {band} ({why}, no deep coadd "
                        f"coadds/deep/tract_T/patch_P/{band}.fits, no templates/visit_V/det_D.fits)"
                    )
            statuses.append(
                VisitStatus(
                    visit=visit,
                    detector=-1 if detector is None else detector,
                    band=band,
                    template=template,
                    psf_stars=psf_stars,
                    ss_predictions=layout.has_ss_predictions(visit),
                    missing=missing,
                )
            )
    dcr_bands = sorted({p.name for p in (layout.root / "coadds" / "dcr").glob("tract_*/patch_*/*")})
    deep = sorted((layout.root / "coadds" / "deep").glob("tract_*/patch_*/*.fits"))
    holds = {
        "visits.parquet": f"{len(bands)} visits" if bands else "missing",
        "exposures": f"{sum(len(layout.detectors(v)) for v in layout.visits())} "
        f"(visit/detector files)",
        "bands": ", ".join(sorted(set(bands.values()))) or "-",
        "skymap.yaml": "present" if has_skymap else "missing",
        "DCR coadds": (
            ", ".join(f"{b}: {len(layout.dcr_patches(b))} patches" for b in dcr_bands) or "none"
        ),
        "deep coadds": f"{len(deep)} files" if deep else "none",
        "isolated-star catalog": f"tracts {iso_tracts}" if iso_tracts else "none",
        "SSO predictions": f"{sum(layout.has_ss_predictions(v) for v in visits)} visits",
    }
    return LayoutReport(layout.root, problems, holds, statuses)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline check``."""
    parser.add_argument("data_dir", type=Path, help="data directory (see docs/tasks.md)")


def main(args: argparse.Namespace) -> int:
    """Print the report; exit status 1 when no visit/detector can run."""
    report = layout_report(DataLayout(args.data_dir))
    print(report.format())
    if not report.runnable:
        print(f"error: nothing in {args.data_dir} can run", file=sys.stderr)
        return 1
    return 0
