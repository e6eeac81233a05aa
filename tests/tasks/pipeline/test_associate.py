"""The ``apdb-pipeline associate`` subcommand on a small data layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from tasks.cli import build_parser
from tasks.cli import main as cli_main
from tasks.core.ids import make_ids
from tasks.data.layout import DataLayout
from tasks.images import Box2I, Exposure, GaussianPsf, PhotoCalib, VisitInfo, make_tan_wcs

ARCSEC = 1.0 / 3600.0
VISIT, DETECTOR = 42, 3


def write_layout(root):
    rng = np.random.default_rng(2)
    size = 256
    wcs = make_tan_wcs(30.0, -10.0, (size / 2, size / 2), 0.2)
    info = VisitInfo(
        visit_id=VISIT,
        exposure_time=30.0,
        midpoint=Time(60200.0, format="mjd", scale="tai"),
        band="r",
        boresight_ra=30.0,
        boresight_dec=-10.0,
        boresight_az_alt=(10.0, 70.0),
        airmass=1.1,
        parallactic_angle=0.0,
        rotator_angle=0.0,
    )

    def exposure():
        return Exposure(
            rng.normal(0, 1, (size, size)).astype(np.float32),
            None,
            np.ones((size, size), np.float32),
            wcs,
            Box2I(0, 0, size, size),
            psf=GaussianPsf(1.5),
            photo_calib=PhotoCalib(1.0),
            visit_info=info,
            detector=DETECTOR,
        )

    layout = DataLayout(root)
    layout.write_exposure(exposure())
    layout.write_output_exposure("diffim", exposure(), VISIT, DETECTOR)
    x, y = rng.uniform(10, 246, 12), rng.uniform(10, 246, 12)
    ra, dec = wcs.pixel_to_world_values(x, y)
    sources = pd.DataFrame(
        {
            "diaSourceId": make_ids(VISIT, DETECTOR, 12),
            "ra": ra,
            "dec": dec,
            "x": x,
            "y": y,
            "psfFlux": 500.0,
            "psfFluxErr": 50.0,
            "bboxSize": 15,
        }
    )
    layout.write_output_table("diaSources", sources, VISIT, DETECTOR)
    ssp = pd.DataFrame({"ssObjectId": [77], "ra": [ra[0] + 0.1 * ARCSEC], "dec": [dec[0]]})
    layout.write_ss_predictions(VISIT, ssp)
    return sources


def test_associate_stores_a_visit_and_refuses_a_rerun(tmp_path, capsys, apdb_url):
    sources = write_layout(tmp_path / "data")
    url = apdb_url
    argv = [
        "associate",
        str(tmp_path / "data"),
        "--visit",
        str(VISIT),
        "--detector",
        str(DETECTOR),
        "--apdb-url",
        url,
        "--create",
    ]
    assert cli_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["nDiaSources"] == 12
    assert summary["nAssociatedSsObjects"] == 1
    assert summary["nNewDiaObjects"] == 11
    assert summary["nDiaForcedSources"] == 0  # single detections: no forced photometry yet
    with Apdb.from_url(url) as apdb:
        stored = apdb.get_dia_sources(Time(60201.0, format="mjd", scale="tai"))
        assert sorted(stored["diaSourceId"]) == sorted(sources["diaSourceId"])
        assert stored.set_index("diaSourceId").loc[sources["diaSourceId"][0], "ssObjectId"] == 77
        counts = apdb.row_counts()
    # a second run is refused with a clear message and changes nothing
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert f"visit {VISIT} detector {DETECTOR} is already stored" in err
    with Apdb.from_url(url) as apdb:
        assert apdb.row_counts() == counts


def test_associate_missing_inputs_and_help(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/apdb.sqlite3"
    argv = [
        "associate",
        str(tmp_path),
        "--visit",
        "1",
        "--detector",
        "0",
        "--apdb-url",
        url,
        "--create",
    ]
    assert cli_main(argv) == 1
    assert "missing exposure" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["associate", "--help"])
    assert "--apdb-url" in capsys.readouterr().out
