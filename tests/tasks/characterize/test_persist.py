import numpy as np
import pytest

from tasks.characterize.finalize import FinalizeCharacterizationTask
from tasks.characterize.persist import (
    read_final_psf_and_ap_corr_map,
    read_psf_and_ap_corr_map,
    summary_path,
    write_final_characterization,
)
from tasks.core.base import TaskError
from tasks.data.layout import DataLayout
from tasks.images import Exposure


def test_outputs_round_trip_through_data_layout(tmp_path, scene):
    task = FinalizeCharacterizationTask()
    task.config.kernelSize = 15
    res = task.run(
        1234,
        "i",
        {0: scene["stars"]},
        {0: scene["sources"]},
        {3: scene["src"]},
        {3: scene["exposure"]},
    )
    layout = DataLayout(tmp_path)
    paths = write_final_characterization(layout, 1234, res)
    assert all(p.exists() for p in paths)
    psf, amap = read_final_psf_and_ap_corr_map(layout, 1234, 3)
    xs, ys = np.array([10.0, 300.3, 620.7]), np.array([5.0, 333.5, 100.2])
    assert np.array_equal(psf.compute_images(xs, ys), res.psfs[3].compute_images(xs, ys))
    assert np.array_equal(amap.evaluate(xs, ys), res.ap_corr_maps[3].evaluate(xs, ys))
    src = layout.read_output_table("finalized_src", 1234, 3)
    assert src["calib_psf_used"].sum() == res.output_table["calib_psf_used"].sum()
    assert layout.read_table(summary_path(layout, 1234))["psf_ok"].all()

    # the same objects travel inside an exposure's FITS file
    exp = scene["exposure"].copy()
    exp.psf, exp.ap_corr_map = psf, amap
    exp.write_fits(tmp_path / "calexp.fits")
    back = Exposure.read_fits(tmp_path / "calexp.fits")
    assert np.array_equal(back.psf.compute_images(xs, ys), psf.compute_images(xs, ys))
    assert np.array_equal(back.ap_corr_map.evaluate(xs, ys), amap.evaluate(xs, ys))


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(TaskError):
        read_psf_and_ap_corr_map(tmp_path / "nope.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(TaskError):
        read_psf_and_ap_corr_map(bad)
