"""Real data: forced photometry on ZTF cutouts with IPAC's PSF against IPAC's PSF-fit fluxes.

ztforce 0.4.0 ships cutouts of isolated stars in 11 ZTF images (2021-2025,
g and r) with the images' DAOPHOT PSF sidecars and IPAC's PSF-catalog flux
of each star (``manifest.json``).  Each cutout is read through the ZTF
instrument profile with the DAOPHOT PSF attached, placed at its position in
the quadrant (the PSF varies over the quadrant), and measured by our forced
photometry task at the catalog position; the pulls against IPAC's fluxes
use both errors.  (The sidecars are DAOPHOT II files, not PSFEx: GalSim's
PSFEx reader does not apply; `tasks.ingest.daophot_psf` reads them.)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.forcedphot import ForcedPhotCcdFromDataFrameTask
from tasks.images import Box2I, Exposure
from tasks.images.wcs_utils import shift_wcs
from tasks.ingest.daophot_psf import DaophotPsf
from tasks.ingest.fits_ingest import read_image
from tasks.ingest.profiles import load_profile
from tasks.testing.realdata import require


@pytest.fixture(scope="module")
def measurements():
    root = require("ztforce", "tests/data/psfcat_agreement")
    manifest = json.loads((root / "manifest.json").read_text())
    profile = load_profile("ztf").model_copy(update={"background_mesh": 16})
    task = ForcedPhotCcdFromDataFrameTask()
    rows = []
    for image in manifest["images"]:
        psf = DaophotPsf.read(root / image["stem"] / "psf.psf")
        for target in image["targets"]:
            cutout = read_image(root / image["stem"] / target["file"], profile, psf=psf)
            # place the cutout in the quadrant: the PSF's spatial terms use quadrant pixels
            x, y = cutout.sky_to_pixel(np.array([target["ra"]]), np.array([target["dec"]]))
            x0 = int(round(target["xpos"] - 1 - float(x[0])))
            y0 = int(round(target["ypos"] - 1 - float(y[0])))
            placed = Exposure(
                cutout.image,
                cutout.mask,
                cutout.variance,
                shift_wcs(cutout.wcs, -x0, -y0),
                Box2I(x0, y0, cutout.width, cutout.height),
                psf=psf,
                photo_calib=cutout.photo_calib,
                visit_info=cutout.visit_info,
                detector=cutout.detector,
            )
            obj = pd.DataFrame({"diaObjectId": [1], "ra": [target["ra"]], "dec": [target["dec"]]})
            out = task.measure_dia_objects(obj, placed, placed).iloc[0]
            to_njy = cutout.photo_calib.calibration_mean
            rows.append(
                {
                    "stem": image["stem"],
                    "kind": target["kind"],
                    "flux": out["psfFlux"],
                    "err": out["psfFluxErr"],
                    "ipac": target.get("flux", np.nan) * to_njy,
                    "ipac_err": target.get("sigflux", np.nan) * to_njy,
                }
            )
    return pd.DataFrame(rows)


def test_forced_fluxes_agree_with_ipac_within_the_combined_errors(measurements):
    stars = measurements[measurements["kind"] == "star"]
    assert len(stars) == 99 and stars["stem"].nunique() == 11
    pull = (stars["flux"] - stars["ipac"]) / np.hypot(stars["err"], stars["ipac_err"])
    ratio = stars["flux"] / stars["ipac"]
    print(
        f"\npulls vs IPAC: n={len(pull)} mean={pull.mean():.3f} std={pull.std():.3f} "
        f"median={pull.median():.3f} |pull|>3: {(pull.abs() > 3).sum()}; flux ratio median "
        f"{ratio.median():.4f}, 5-95% {ratio.quantile(0.05):.3f}-{ratio.quantile(0.95):.3f}"
    )
    # IPAC's sigflux carries a per-image systematic floor, so the pulls are narrower
    # than a unit normal; they must be centred and within the combined errors
    assert abs(pull.median()) < 0.5
    assert pull.std() < 1.0
    assert (pull.abs() < 3).mean() >= 0.95
    assert abs(ratio.median() - 1) < 0.01


def test_blank_sky_measures_zero(measurements):
    blanks = measurements[measurements["kind"] == "blank"]
    assert len(blanks) >= 30
    z = blanks["flux"] / blanks["err"]
    print(f"\nblank sky: n={len(z)} mean S/N {z.mean():.2f} std {z.std():.2f}")
    assert abs(z.mean()) < 0.5 and 0.5 < z.std() < 1.6
