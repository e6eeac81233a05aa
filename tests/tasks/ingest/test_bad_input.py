"""Bad input to ``apdb-pipeline ingest``: one line on stderr, exit 1, data directory unchanged.

Each case is a batch of a good image followed by a bad one, into a data
directory that already holds an earlier ingest: the bad file is refused
before anything is written, so neither the good file of the same batch nor
anything else reaches the directory (its files and their bytes are
compared before and after).  Ingest writes no APDB; the APDB side of bad
catalogs is tested in ``test_catalog.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tasks.cli import main

SHAPE = (120, 100)


def _header(visit: int, band: str = "r") -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [50.5, 60.5]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    header = wcs.to_header()
    header.update(
        {
            "MJD-OBS": 60400.1 + visit * 0.01,
            "EXPTIME": 30.0,
            "FILTER": band,
            "AIRMASS": 1.2,
            "ZP": 28.0,
            "GAIN": 2.0,
            "RDNOISE": 5.0,
            "SEEING": 3.0,  # FWHM in pixels (so the PSF width is not estimated)
            "EXPNUM": visit,
        }
    )
    return header


def _image(seed: int) -> np.ndarray:
    """Sky noise and a few Gaussian stars (sky level 100, gain 2)."""
    rng = np.random.default_rng(seed)
    image = 100.0 + rng.normal(0.0, np.sqrt(100.0 / 2.0 + 6.25), SHAPE)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for x, y in rng.uniform(15, 85, (6, 2)):
        image += 5000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2))
    return image.astype(np.float32)


def _write(path: Path, header: fits.Header, image: np.ndarray) -> Path:
    fits.PrimaryHDU(image, header=header).writeto(path)
    return path


@pytest.fixture()
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "cam.yaml"
    generic = (Path(__file__).parents[3] / "tasks/ingest/profiles/generic.yaml").read_text()
    path.write_text(
        generic.replace("name: generic", "name: cam") + "visit: EXPNUM\n"
        "seeing_fwhm_pixels: SEEING\n"
    )
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.fits"
    header, image = _header(9), _image(9)
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(1).bytes(5760))
    elif kind == "truncated":
        full = _write(tmp_path / "full.fits", header, image).read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "no_wcs":
        for key in list(header):
            if key.startswith(("CTYPE", "CRVAL", "CRPIX", "CDELT", "CUNIT", "WCSAXES", "PC")):
                del header[key]
        _write(path, header, image)
    elif kind == "missing_keyword":
        del header["EXPTIME"]
        _write(path, header, image)
    elif kind == "unknown_band":
        header["FILTER"] = "Halpha"
        _write(path, header, image)
    elif kind == "nan_only":
        _write(path, header, np.full(SHAPE, np.nan, np.float32))
    return path


CASES = {
    "corrupt": "cannot read",
    "truncated": "cannot read",
    "no_wcs": "no celestial WCS",
    "missing_keyword": "EXPTIME",
    "unknown_band": "'Halpha'",
    "nan_only": "no usable pixel",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_file_is_one_line_and_leaves_the_directory_unchanged(kind, tmp_path, profile, capsys):
    data = tmp_path / "data"
    first = _write(tmp_path / "first.fits", _header(1), _image(1))
    assert main(["ingest", str(data), str(first), "--profile", str(profile)]) == 0
    capsys.readouterr()
    before = _snapshot(data)
    assert "visits.parquet" in before and len(before) >= 2
    good = _write(tmp_path / "good.fits", _header(2), _image(2))
    bad = _bad_file(kind, tmp_path)
    code = main(["ingest", str(data), str(good), str(bad), "--profile", str(profile)])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("apdb-pipeline ingest: error:"), err
    assert "Traceback" not in err and bad.name in err and CASES[kind] in err, err
    assert captured.out == ""  # nothing reported as ingested
    assert _snapshot(data) == before


def test_a_bad_first_file_creates_no_directory(tmp_path, profile, capsys):
    data = tmp_path / "new"
    bad = _bad_file("truncated", tmp_path)
    assert main(["ingest", str(data), str(bad), "--profile", str(profile)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not data.exists()
