"""Catalog-only mode on synthetic catalogs with known truth, and with images for some visits."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.time import Time

from apdb import Apdb
from tasks.alerts.cutouts import BAD_PLANES
from tasks.alerts.io import read_alert_file, validate_alert
from tasks.alerts.schema import load_alert_schema
from tasks.cli import main
from tasks.data.layout import DataLayout
from tasks.images import bits_from_names
from tasks.ingest.catalog import mag_to_njy, to_dia_sources
from tasks.ingest.errors import IngestError
from tasks.ingest.mapping import ColumnMapping

# three objects 10" apart (well separated for the association), five exposures
OBJECTS = [(150.0, 2.0), (150.0 + 10 / 3600, 2.0), (150.0, 2.0 + 10 / 3600)]
TIMES = [60000.10, 60000.20, 60001.10, 60002.30, 60003.40]  # MJD UTC, exposure start
BANDS = ["G", "R", "G", "R", "G"]


def user_catalog(seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """A catalog in microjansky with UTC start times and the object index of each row."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for t, band in zip(TIMES, BANDS, strict=True):
        for k, (ra, dec) in enumerate(OBJECTS):
            jitter = rng.normal(0, 0.1 / 3600, 2)
            rows.append(
                {
                    "src_ra": ra + jitter[0],
                    "src_dec": dec + jitter[1],
                    "f_uJy": float(rng.uniform(-5, 20)),
                    "f_err": 0.3,
                    "mjd_start": t,
                    "filter": band,
                }
            )
            truth.append(k)
    return pd.DataFrame(rows), np.array(truth)


MAPPING = {
    "columns": {
        "ra": "src_ra",
        "dec": "src_dec",
        "flux": "f_uJy",
        "fluxErr": "f_err",
        "time": "mjd_start",
        "band": "filter",
    },
    "flux_unit": "uJy",
    "time_format": "mjd",
    "time_scale": "utc",
    "time_reference": "start",
    "exposure_time": 30.0,
    "bands": {"G": "g", "R": "r"},
}


def test_units_times_bands_and_visits_are_converted():
    catalog, _ = user_catalog()
    out = to_dia_sources(catalog, ColumnMapping.from_dict(MAPPING))
    assert len(out) == 15
    np.testing.assert_allclose(np.sort(out["psfFlux"]), np.sort(catalog["f_uJy"] * 1000.0))
    assert (out["psfFluxErr"] == 300.0).all()
    mid = Time(np.array(TIMES), format="mjd", scale="utc").tai.mjd + 15 / 86400
    np.testing.assert_allclose(np.unique(out["midpointMjdTai"]), mid, rtol=0, atol=1e-9)
    assert out.groupby("visit")["midpointMjdTai"].nunique().eq(1).all()
    assert out["visit"].nunique() == 5 and set(out["band"]) == {"g", "r"}
    assert out["diaSourceId"].is_unique


def test_magnitudes_with_a_sign_become_signed_njy():
    frame = pd.DataFrame(
        {
            "m": [31.4, 21.4, 21.4],
            "e": [0.1, 0.01, 0.01],
            "pos": ["t", "f", "1"],
            "ra": [1.0, 1.0, 1.0],
            "dec": [0.0, 0.0, 0.0],
            "t": [60000.0] * 3,
            "b": ["r"] * 3,
        }
    )
    mapping = ColumnMapping.from_dict(
        {
            "columns": {
                "ra": "ra",
                "dec": "dec",
                "flux": "m",
                "fluxErr": "e",
                "sign": "pos",
                "time": "t",
                "band": "b",
            },
            "flux_unit": "mag",
        }
    )
    out = to_dia_sources(frame, mapping).sort_values("psfFlux")
    np.testing.assert_allclose(out["psfFlux"], [-1e4, 1.0, 1e4])
    np.testing.assert_allclose(
        out["psfFluxErr"],
        [
            1e4 * 0.01 * math.log(10) / 2.5,
            0.1 * math.log(10) / 2.5,
            1e4 * 0.01 * math.log(10) / 2.5,
        ],
    )
    flux, err = mag_to_njy(np.array([23.9]), np.array([0.0]))
    assert flux[0] == pytest.approx(1000.0) and err[0] == 0.0  # 23.9 AB = 1 uJy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bands": {"G": "g"}}, "not in the mapping's bands"),
        ({"columns": {**MAPPING["columns"], "flux": "nope"}}, "no column 'nope'"),
        ({"columns": {"ra": "src_ra"}}, "lacks required column"),
        ({"time_reference": "start", "exposure_time": None}, "needs exposure_time"),
    ],
)
def test_bad_mappings_are_our_errors(change, message):
    catalog, _ = user_catalog()
    with pytest.raises(IngestError, match=message):
        to_dia_sources(catalog, ColumnMapping.from_dict({**MAPPING, **change}))


def test_cli_stores_groups_and_alerts_a_csv_catalog(tmp_path, capsys):
    catalog, truth = user_catalog()
    path = tmp_path / "detections.csv"
    catalog.to_csv(path, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({**MAPPING, "flux_unit": "nJy"}))
    url = f"sqlite:///{tmp_path / 'apdb.sqlite3'}"
    # the CLI option overrides the file's flux unit
    args = [
        "catalog",
        str(path),
        "--mapping",
        str(mapping),
        "--flux-unit",
        "uJy",
        "--apdb-url",
        url,
        "--alerts-dir",
        str(tmp_path / "alerts"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "DiaSources: 15   new DiaObjects: 3" in out
    with Apdb.from_url(url) as apdb:
        stored = apdb.get_dia_sources(
            Time(70000, format="mjd", scale="tai"),
            start_time=Time(50000, format="mjd", scale="tai"),
        )
    expected = to_dia_sources(
        catalog.assign(obj=truth), ColumnMapping.from_dict(MAPPING), keep=["obj"]
    )
    both = expected.merge(stored, on="diaSourceId", suffixes=("", "_db"))
    assert len(both) == 15
    np.testing.assert_allclose(both["psfFlux_db"], both["psfFlux"], rtol=1e-6)
    np.testing.assert_allclose(both["midpointMjdTai_db"], both["midpointMjdTai"], atol=1e-9)
    # each true object is one DiaObject, and each DiaObject one true object
    table = pd.crosstab(both["obj"], both["diaObjectId"])
    assert table.gt(0).sum(axis=1).eq(1).all() and table.gt(0).sum(axis=0).eq(1).all()
    assert stored["diaObjectId"].nunique() == 3
    schema = load_alert_schema()
    alerts = [a for f in (tmp_path / "alerts").glob("*.avro") for a in read_alert_file(f)]
    assert len(alerts) == 15
    for alert in alerts:
        validate_alert(alert, schema)
        assert alert["cutoutDifference"] is None
    # rerunning skips what is stored
    assert main(args) == 0
    assert "skipped (already stored): 5" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_leave_the_database_empty(tmp_path, capsys):
    catalog, _ = user_catalog()
    catalog.loc[3, "filter"] = "Q"
    path = tmp_path / "detections.parquet"
    catalog.to_parquet(path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    url = f"sqlite:///{tmp_path / 'apdb.sqlite3'}"
    code = main(["catalog", str(path), "--mapping", str(mapping), "--apdb-url", url])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "band values ['Q']" in err
    assert not (tmp_path / "apdb.sqlite3").exists()
    code = main(["catalog", str(tmp_path / "nope.csv"), "--column", "ra", "--apdb-url", url])
    err = capsys.readouterr().err
    assert code == 1 and "KEY=VALUE" in err


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # a word where a number belongs is an error, not a silently dropped row
        (
            lambda c: c.astype({"f_uJy": object}).assign(**{"f_uJy": ["bright"] + [1.0] * 14}),
            "'f_uJy' (mapped to flux) holds values that are not numbers: ['bright']",
        ),
        # the last exposure's time given to an earlier one's row: checked before any store
        (lambda c: c.assign(mjd_start=[*c["mjd_start"][:-1], TIMES[0]]), "mixes bands"),
    ],
)
def test_bad_catalog_rows_store_nothing(tmp_path, capsys, broken, message):
    catalog, _ = user_catalog()
    catalog = broken(catalog)
    catalog["exposure"] = np.repeat(np.arange(len(TIMES)), len(OBJECTS))
    path = tmp_path / "detections.csv"
    catalog.to_csv(path, index=False)
    mapping = tmp_path / "mapping.yaml"
    columns = {**MAPPING["columns"], "visit": "exposure"}
    mapping.write_text(yaml.safe_dump({**MAPPING, "columns": columns}))
    url = f"sqlite:///{tmp_path / 'apdb.sqlite3'}"
    code = main(["catalog", str(path), "--mapping", str(mapping), "--apdb-url", url])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "apdb.sqlite3").exists()


@pytest.fixture(scope="module")
def pipeline_outputs(tmp_path_factory):
    """A tiny simulated survey run through the image pipeline (its outputs are the input)."""
    from tasks.data.layout import DataLayout
    from tasks.pipeline.runner import run_pipeline
    from tasks.pipeline.visit import ProcessVisitConfig
    from tasks.simulate import SimulationConfig, simulate_survey

    root = tmp_path_factory.mktemp("imgsurvey")
    simulate_survey(SimulationConfig.tiny(seed=5, n_visits=3), root)
    layout = DataLayout(root)
    config = ProcessVisitConfig()
    config.packageAlerts.alertWriteLocation = str(root / "outputs" / "alerts")
    with Apdb.create(f"sqlite:///{root / 'image_run.sqlite3'}") as apdb:
        summary = run_pipeline(layout, apdb, config, progress=False)
        counts = apdb.row_counts()
    assert not summary.failed
    return root, summary, counts


def test_catalog_mode_with_images_runs_forced_photometry_and_cuts_out(
    pipeline_outputs, tmp_path, capsys
):
    """The image pipeline's own DiaSources, replayed in catalog mode with the images present."""
    root, summary, counts = pipeline_outputs

    layout = DataLayout(root)
    tables = [layout.read_output_table("diaSources", v, d) for v, d in summary.processed]
    catalog = pd.concat(tables, ignore_index=True)
    path = tmp_path / "mine.parquet"
    catalog.to_parquet(path)
    # the second visit has no images: it runs from the catalog alone
    no_image = summary.processed[1]
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("*.sqlite3", "alerts"))
    (DataLayout(data).output_path("diffim", *no_image, ".fits")).unlink()
    url = f"sqlite:///{tmp_path / 'apdb.sqlite3'}"
    columns = ["diaSourceId", "visit", "detector", "ra", "dec", "x", "y", "band"]
    args = [
        "catalog",
        str(path),
        "--apdb-url",
        url,
        "--data-dir",
        str(data),
        "--alerts-dir",
        str(tmp_path / "alerts"),
        "--time-scale",
        "tai",
        "--column",
        "flux=psfFlux",
        "--column",
        "fluxErr=psfFluxErr",
        "--column",
        "time=midpointMjdTai",
    ] + [a for c in columns for a in ("--column", f"{c}={c}")]
    assert main(args) == 0
    assert "with images: 2" in capsys.readouterr().out
    with Apdb.from_url(url) as apdb:
        mine = apdb.row_counts()
    # every given detection is stored (the image run also dropped its flagged, unassociated
    # ones: the catalog maps no flag columns); forced photometry only where images are
    assert mine["DiaSource"] == len(catalog) >= counts["DiaSource"]
    assert 0 < mine["DiaForcedSource"] <= counts["DiaForcedSource"]
    alerts = {}
    for f in (tmp_path / "alerts").glob("*.avro"):
        for a in read_alert_file(f):
            alerts.setdefault(a["diaSource"]["visit"], []).append(a)
    assert all(a["cutoutDifference"] is None for a in alerts[no_image[0]])
    with_images = [v for v, _ in summary.processed if v != no_image[0]]
    cut = [a for v in with_images for a in alerts[v]]
    missing = [a["diaSource"] for a in cut if a["cutoutDifference"] is None]
    assert len(missing) <= 0.05 * len(cut)
    # a missing cutout has a logged reason: here no valid pixel (a masked centre)
    bad = bits_from_names(list(BAD_PLANES))
    for src in missing:
        diffim = DataLayout(data).read_output_exposure("diffim", src["visit"], src["detector"])
        assert diffim.mask[round(src["y"]), round(src["x"])] & bad
