"""``apdb lightcurve``: the printed table, the plot, unknown objects and ``| head``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.time import Time

from apdb import Apdb
from apdb.cli import main
from apdb.cli.lightcurve import format_light_curve, light_curve_figure
from apdb.testing.catalogs import make_dia_objects, make_dia_sources

N_SOURCES = 2000  # one object measured many times: ~100 kB of printed table
MJD0 = 61234.5


@pytest.fixture(scope="module")
def busy_apdb(tmp_path_factory):
    """An SQLite APDB with DiaObject 1 detected N_SOURCES times over 5 visits."""
    url = f"sqlite:///{tmp_path_factory.mktemp('lc') / 'apdb.sqlite3'}"
    rng = np.random.default_rng(2)
    per_visit = N_SOURCES // 5
    with Apdb.create(url) as apdb:
        for visit in range(5):
            ids = np.ones(per_visit, dtype=np.int64)
            ra = np.full(per_visit, 20.0)
            dec = np.full(per_visit, 10.0)
            sources = make_dia_sources(
                visit * per_visit + np.arange(per_visit),
                ids,
                ra,
                dec,
                visit,
                1,
                MJD0 + 0.5 * visit,
                rng,
            )
            objects = make_dia_objects(ids[:1], ra[:1], dec[:1], rng, n_sources=per_visit)
            apdb.store(Time(MJD0 + 0.5 * visit, format="mjd", scale="tai"), objects, sources)
        curve = apdb.get_light_curve(1)
    return url, curve


def test_prints_a_fixed_format_table(busy_apdb, capsys):
    url, curve = busy_apdb
    assert len(curve) == N_SOURCES
    assert main(["lightcurve", "1", url]) == 0
    out = capsys.readouterr().out
    assert out == format_light_curve(curve) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == [
        "kind",
        "measurementId",
        "visit",
        "detector",
        "band",
        "midpointMjdTai",
        "psfFlux",
        "psfFluxErr",
        "scienceFlux",
        "scienceFluxErr",
    ]
    first = lines[1].split()
    assert first[:5] == ["detection", "0", "0", "1", "r"]
    assert first[5] == f"{MJD0:.6f}"
    assert first[6] == f"{curve['psfFlux'].iloc[0]:.1f}"


def test_unknown_object_is_one_line_and_non_zero(busy_apdb, capsys):
    url, _ = busy_apdb
    assert main(["lightcurve", "424242", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "apdb lightcurve: error: DiaObject 424242 has no measurements in this APDB"
    ]


def test_plot_time_axis_shows_plain_mjd(busy_apdb, tmp_path):
    _, curve = busy_apdb
    fig = light_curve_figure(curve, title="DiaObject 1")
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        formatter = ax.xaxis.get_major_formatter()
        assert formatter.get_offset() == ""  # no "+6.1234e4"
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    values = [float(text.replace("\N{MINUS SIGN}", "-")) for text in labels]
    assert all(MJD0 - 1 <= v <= MJD0 + 3 for v in values), labels
    assert main(["lightcurve", "1", busy_apdb[0], "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_piping_into_head_prints_no_traceback(busy_apdb):
    url, _ = busy_apdb
    script = "import sys; from apdb.cli import main; sys.exit(main(sys.argv[1:]))"
    command = f"{sys.executable} -c '{script}' lightcurve 1 {url} | head -n 2"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=120
    )
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""
    assert result.returncode == 1
