"""``apdb-pipeline check`` and ``run`` on usable, partial, empty and missing data directories."""

from __future__ import annotations

import shutil

import pytest

from tasks.cli import main
from tasks.data.layout import DataLayout
from tasks.pipeline.check import layout_report


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    from tasks.simulate import SimulationConfig, simulate_survey

    root = tmp_path_factory.mktemp("check_survey")
    simulate_survey(SimulationConfig.tiny(seed=3, n_visits=2), root)
    return root


def _copy(survey, tmp_path, *drop: str):
    root = tmp_path / "data"
    shutil.copytree(survey, root)
    for rel in drop:
        shutil.rmtree(root / rel)
    return root


def test_a_complete_survey_is_ready(survey, capsys):
    report = layout_report(DataLayout(survey))
    assert report.problems == []
    assert [(v.visit, v.band, v.template) for v in report.visits] == [
        (1000, "g", "dcr"),
        (1001, "r", "dcr"),
    ]
    assert all(v.psf_stars == "isolated-star catalog" and v.ss_predictions for v in report.visits)
    assert main(["check", str(survey)]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 visit/detectors can run" in out
    assert "DCR coadds             g: 1 patches, r: 1 patches" in out


def test_without_dcr_coadds_only_the_band_with_a_deep_coadd_runs(survey, tmp_path, capsys):
    # without DCR coadds, r falls back to the plain template (its deep coadd); g has none
    root = _copy(survey, tmp_path, "coadds/dcr", "isolated_stars")
    DataLayout(root).deep_coadd_path(0, 0, "g").unlink()
    report = layout_report(DataLayout(root))
    by_visit = {v.visit: v for v in report.visits}
    assert by_visit[1001].runnable and by_visit[1001].template == "plain"
    assert by_visit[1001].psf_stars == "own detections"
    assert not by_visit[1000].runnable
    assert "no template in band g" in by_visit[1000].missing[0]
    assert main(["check", str(root)]) == 0
    assert "visit 1000 det 0 band g: cannot run: no template in band g" in capsys.readouterr().out


def test_exposures_alone_cannot_run_and_run_says_why(survey, tmp_path, capsys):
    root = _copy(survey, tmp_path, "coadds", "isolated_stars", "ssp", "truth")
    assert main(["check", str(root)]) == 1
    captured = capsys.readouterr()
    assert "0 of 2 visit/detectors can run" in captured.out
    assert "nothing in" in captured.err
    db = tmp_path / "apdb.sqlite3"
    code = main(["run", str(root), "--apdb-url", f"sqlite:///{db}", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "cannot run: no template in band g" in captured.err
    assert "processed" not in captured.out
    assert not db.exists()  # nothing was created


def test_an_empty_or_missing_directory_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and f"no exposures under {empty / 'exposures'}" in out
    assert main(["run", str(empty), "--no-progress"]) == 1
    assert "0 of 0 visit/detectors can run" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nope")]) == 1
    assert "is not a directory" in capsys.readouterr().out


def test_an_exposure_missing_from_the_visit_table_is_named(survey, tmp_path):
    root = _copy(survey, tmp_path)
    layout = DataLayout(root)
    table = layout.read_visit_table()
    layout.write_visit_table(table[table["visit"] == 1000])
    report = layout_report(layout)
    assert "visit 1001 has exposures but is not in visits.parquet" in report.problems
    missing = {v.visit: v.missing for v in report.visits}
    assert missing == {1000: [], 1001: ["not in visits.parquet"]}
