"""The "your own data" walk-through of docs/tasks.md, run on images with known truth.

A simulated survey is exported as a user's plain FITS files (one image with
VARIANCE and MASK extensions per exposure, FITS keywords for time, band,
exposure time, airmass and zero point; one deep coadd per band) and the
documented commands are run on them: ``ingest`` (science and template),
``check``, ``run``, then the alerts are read back.  The truth says which
transients and variables must be found.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits

from tasks.alerts.io import read_alert_file, validate_alert
from tasks.alerts.schema import load_alert_schema
from tasks.cli import main
from tasks.data.layout import DataLayout
from tasks.images import MaskPlane
from tasks.ingest.profiles import PROFILE_DIR

SNR_REQUIRED = 10.0


def write_user_fits(exposure, path, mjd_start_utc: float | None = None) -> None:
    """What a user's own pipeline might write: image + VARIANCE + MASK, plain keywords."""
    header = exposure.array_wcs().to_header(relax=True)
    zp = 31.4 - 2.5 * np.log10(exposure.photo_calib.calibration_mean)
    header["ZP"] = (zp, "AB mag of one count")
    header["FILTER"] = exposure.band
    info = exposure.visit_info
    if info is not None:
        header["EXPTIME"] = info.exposure_time
        header["MJD-OBS"] = mjd_start_utc
        header["AIRMASS"] = info.airmass
        header["EXPNUM"] = info.visit_id
    primary = fits.PrimaryHDU(exposure.image.astype(np.float32), header=header)
    var = fits.ImageHDU(exposure.variance.astype(np.float32), name="VARIANCE")
    mask = fits.ImageHDU(exposure.mask.astype(np.int32), name="MASK")
    fits.HDUList([primary, var, mask]).writeto(path)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from tasks.simulate import SimulationConfig, simulate_survey

    sim = tmp_path_factory.mktemp("sim")
    simulate_survey(SimulationConfig.tiny(seed=21, n_visits=4), sim)
    layout = DataLayout(sim)
    files = tmp_path_factory.mktemp("user_files")
    science = []
    for visit in layout.visits():
        exposure = layout.read_exposure(visit, 0)
        start = (
            exposure.visit_info.midpoint.utc.mjd - 0.5 * exposure.visit_info.exposure_time / 86400
        )
        path = files / f"night1_{visit}.fits"
        write_user_fits(exposure, path, start)
        science.append(path)
    deep = []
    for band in ("g", "r"):
        path = files / f"deep_{band}.fits"
        coadd = layout.read_deep_coadd(0, 0, band)
        write_user_fits(coadd, path)  # a coadd: no time, exposure time or airmass
        deep.append(path)
    # the user's profile: a copy of the generic one with their extensions and mask bits
    profile = yaml.safe_load((PROFILE_DIR / "generic.yaml").read_text())
    profile.update(
        name="my_camera",
        variance_hdu="VARIANCE",
        mask_hdu="MASK",
        mask_planes={"BAD": [0], "SAT": [1], "CR": [3], "NO_DATA": [7]},
        visit="EXPNUM",
    )
    profile_path = files / "my_camera.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    return sim, science, deep, profile_path


def _documented_commands() -> list[list[str]]:
    """The command block of docs/tasks.md, "From FITS images to alerts", split into words."""
    text = (Path(__file__).parents[3] / "docs" / "tasks.md").read_text()
    section = text.split("### From FITS images to alerts", 1)[1]
    block = section.split("```", 2)[1]
    return [shlex.split(line) for line in block.strip().splitlines()]


def test_walkthrough_from_fits_files_to_alerts(user_files, tmp_path, capsys):
    sim, science, deep, profile = user_files
    data = tmp_path / "mydata"
    url = f"sqlite:///{tmp_path / 'apdb.sqlite3'}"
    # the documented commands, word for word, on the user's files (the shell's glob
    # and the file names replaced by their paths here)
    commands = _documented_commands()
    assert [c[:2] for c in commands] == [
        ["apdb-pipeline", "ingest"],
        ["apdb-pipeline", "ingest"],
        ["apdb-pipeline", "check"],
        ["apdb-pipeline", "run"],
    ]
    names = {p.name: str(p) for p in [*science, *deep, profile]}
    names |= {"mydata": str(data), "sqlite:///apdb.sqlite3": url}

    def words(command: list[str]) -> list[str]:
        out = []
        for word in command[1:]:
            if word == "night1_*.fits":
                out.extend(map(str, science))
            else:
                out.append(names.get(word, word))
        return out

    # 1. ingest the science images and the templates
    assert main(words(commands[0])) == 0
    out = capsys.readouterr().out
    assert out.count("science)") == 4
    line = re.compile(
        r"night1_\d+\.fits -> exposures/visit_\d{7}/det_000\.fits "
        r"\(visit \d+ det 0 band [gr], science\)"
    )
    assert all(line.fullmatch(row) for row in out.splitlines()), out
    assert main(words(commands[1])) == 0
    assert "coadds/deep/tract_0/patch_0/g.fits" in capsys.readouterr().out
    # 2. check what can run
    assert main(words(commands[2])) == 0
    out = capsys.readouterr().out
    assert "4 of 4 visit/detectors can run" in out and "template: plain" in out
    # 3. run the pipeline
    assert main(words(commands[3])) == 0
    out = capsys.readouterr().out
    assert "visits/detectors processed: 4" in out and "failed: 0" in out
    # 4. the alerts: valid, and every bright truth transient/variable among them
    layout = DataLayout(data)
    schema = load_alert_schema()
    alerts = [
        a for f in sorted((data / "outputs" / "alerts").glob("*.avro")) for a in read_alert_file(f)
    ]
    assert alerts
    for alert in alerts[:50]:
        validate_alert(alert, schema)
    found = pd.DataFrame([a["diaSource"] for a in alerts])
    truth_layout = DataLayout(sim)
    objects = truth_layout.read_truth_objects().set_index("objectId")
    truth = truth_layout.read_truth_sources()
    truth = truth[truth["kind"].isin(["transient", "variable"]) & ~truth["saturated"]]
    mean = np.array(
        [objects.loc[o, f"flux_{b}"] for o, b in zip(truth["objectId"], truth["band"], strict=True)]
    )
    template_flux = np.where(truth["kind"] == "variable", mean, 0.0)
    truth = truth.assign(diffFlux=truth["flux"].to_numpy() - template_flux, tFlux=template_flux)
    truth = truth[truth["x"].between(15, 496) & truth["y"].between(15, 496)]
    bad = int(MaskPlane.BAD | MaskPlane.SAT | MaskPlane.CR | MaskPlane.NO_DATA)
    checked = 0
    for visit, rows in truth.groupby("visit"):
        here = found[found["visit"] == visit]
        noise = float(np.median(here["psfFluxErr"]))
        mask = layout.read_exposure(int(visit), 0).mask
        for _, row in rows.iterrows():
            if abs(row["diffFlux"]) < max(SNR_REQUIRED * noise, 0.1 * row["tFlux"]):
                continue
            i, j = round(row["y"]), round(row["x"])
            if (mask[i - 12 : i + 13, j - 12 : j + 13] & bad).any():
                continue
            d = np.hypot(here["x"] - row["x"], here["y"] - row["y"])
            assert d.min() < 2.0, f"visit {visit}: {row['kind']} {row['objectId']} missed"
            assert np.sign(here["psfFlux"].iloc[int(np.argmin(d))]) == np.sign(row["diffFlux"])
            checked += 1
    assert checked >= 8


def test_ingest_errors_are_one_line(user_files, tmp_path, capsys):
    _, science, _, profile = user_files
    data = tmp_path / "d"
    code = main(["ingest", str(data), str(science[0]), "--profile", "nosuch"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no instrument profile 'nosuch'" in err
    generic = main(["ingest", str(data), str(science[0]), "--profile", "generic"])
    err = capsys.readouterr().err
    # the generic profile reads no variance HDU and the file has no GAIN keyword
    assert generic == 1 and "no variance plane and no gain/read noise" in err
    assert not (data / "visits.parquet").exists()
