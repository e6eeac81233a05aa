import numpy as np
import pandas as pd
import pytest

from tasks.data.layout import DataLayout, DataLayoutError, visit_info_to_row
from tasks.data.skymap import SkyMap
from tasks.images import Exposure, GaussianPsf, make_tan_wcs


def _exposure(visit_info=None, detector=None):
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    return Exposure(
        image,
        None,
        np.ones_like(image),
        make_tan_wcs(10, 20, (1, 1), 0.2),
        psf=GaussianPsf(1.0),
        visit_info=visit_info,
        detector=detector,
    )


def test_exposures_visits_and_detectors(tmp_path):
    from tests.tasks.images.test_exposure import _visit_info

    layout = DataLayout(tmp_path)
    assert layout.visits() == []
    info = _visit_info()
    layout.write_exposure(_exposure(info, 3))
    layout.write_exposure(_exposure(info, 1))
    layout.write_exposure(_exposure(), visit=7, detector=0)
    assert layout.visits() == [7, info.visit_id]
    assert layout.detectors(info.visit_id) == [1, 3]
    back = layout.read_exposure(info.visit_id, 3)
    np.testing.assert_array_equal(back.image, np.arange(12).reshape(3, 4))
    assert back.visit_info == info
    with pytest.raises(DataLayoutError):
        layout.read_exposure(7, 5)
    with pytest.raises(DataLayoutError):
        layout.write_exposure(_exposure())
    # no temporary files are left behind
    assert not list(tmp_path.rglob(".*"))
    # the visit table round-trips the VisitInfo
    layout.write_visit_table(pd.DataFrame([visit_info_to_row(info)]))
    again = layout.read_visit_info(info.visit_id)
    assert again.airmass == info.airmass and again.band == info.band
    assert again.midpoint_mjd_tai == pytest.approx(info.midpoint_mjd_tai, abs=1e-9)


def test_tables_coadds_and_errors(tmp_path):
    layout = DataLayout(tmp_path)
    for k in range(3):
        layout.write_dcr_coadd(_exposure(), 0, 4, "g", k)
    assert layout.dcr_subfilters(0, 4, "g") == [0, 1, 2]
    assert len(layout.read_dcr_coadds(0, 4, "g")) == 3
    assert layout.dcr_patches() == [(0, 4)] and layout.dcr_patches("r") == []
    layout.dcr_coadd_path(0, 4, "g", 1).unlink()
    with pytest.raises(DataLayoutError, match="not 0..n-1"):
        layout.read_dcr_coadds(0, 4, "g")
    with pytest.raises(DataLayoutError):
        layout.read_dcr_coadds(1, 1, "r")
    ssp = pd.DataFrame({"ssObjectId": [1, 2], "ra": [10.0, 10.1], "dec": [20.0, 20.1]})
    layout.write_ss_predictions(5, ssp)
    pd.testing.assert_frame_equal(layout.read_ss_predictions(5), ssp)
    with pytest.raises(DataLayoutError):
        layout.write_ss_predictions(6, ssp.drop(columns="dec"))
    with pytest.raises(DataLayoutError):
        layout.write_ss_predictions(6, pd.concat([ssp, ssp]))
    layout.ss_predictions_path(8).parent.mkdir(exist_ok=True)
    layout.ss_predictions_path(8).write_bytes(b"garbage")
    with pytest.raises(DataLayoutError):
        layout.read_ss_predictions(8)
    layout.write_skymap(SkyMap())
    assert layout.read_skymap().to_dict() == SkyMap().to_dict()
    df = pd.DataFrame({"diaSourceId": [1, 2], "psfFlux": [1.5, np.nan]})
    path = layout.write_output_table("diaSources", df, 5, 2)
    assert path.parent == tmp_path / "outputs" / "visit_0000005" / "det_002"
    pd.testing.assert_frame_equal(layout.read_output_table("diaSources", 5, 2), df)
    with pytest.raises(DataLayoutError):
        layout.output_path("../evil", 5, 2, ".fits")


def test_check_reports_inconsistencies(tmp_path):
    from tests.tasks.images.test_exposure import _visit_info

    layout = DataLayout(tmp_path)
    assert any("no exposures" in p for p in layout.check())
    info = _visit_info()
    layout.write_exposure(_exposure(info, 0))
    layout.write_visit_table(pd.DataFrame([visit_info_to_row(info)]))
    layout.write_skymap(SkyMap())
    assert layout.check() == []
    layout.write_exposure(_exposure(), visit=9, detector=0)
    layout.write_dcr_coadd(_exposure(), 0, 1, "r", 1)
    problems = layout.check()
    assert any("visit 9 has exposures" in p for p in problems)
    assert any("sub-filters [1]" in p for p in problems)
