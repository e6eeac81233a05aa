"""Reading and writing the outputs of the final characterization.

Per visit and detector, under the data layout's output directory
(`tasks.data.layout.DataLayout.output_path`)::

    outputs/visit_VVVVVVV/det_DDD/finalized_psf_apcorr.fits   PSF + aperture-correction map
    outputs/visit_VVVVVVV/det_DDD/finalized_src.parquet       sources with calib_psf_* flags
    outputs/visit_VVVVVVV/finalize_characterization.parquet   a row per detector (psf_ok, reason)

The FITS file has an empty primary HDU, then ``PSF`` and ``APCORR``
extensions written with the exposure model's persistence registry, so the
same objects also round-trip inside an `Exposure` FITS file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from astropy.io import fits

from tasks.characterize.apcorr import ApCorrMap
from tasks.core.base import Struct, TaskError
from tasks.images import Psf, object_from_hdu, object_to_hdu

__all__ = [
    "PSF_APCORR_NAME",
    "SRC_NAME",
    "read_final_psf_and_ap_corr_map",
    "read_psf_and_ap_corr_map",
    "summary_path",
    "write_final_characterization",
    "write_psf_and_ap_corr_map",
]

PSF_APCORR_NAME = "finalized_psf_apcorr"
SRC_NAME = "finalized_src"


def summary_path(layout: Any, visit: int) -> Path:
    """Path of the per-visit summary table (one row per detector)."""
    return (
        Path(layout.output_root) / f"visit_{int(visit):07d}" / "finalize_characterization.parquet"
    )


def write_psf_and_ap_corr_map(path: Path, psf: Psf, ap_corr_map: ApCorrMap) -> Path:
    """Write a PSF and an aperture-correction map to one FITS file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus = fits.HDUList(
        [fits.PrimaryHDU(), object_to_hdu(psf, "PSF"), object_to_hdu(ap_corr_map, "APCORR")]
    )
    tmp = path.with_name(path.name + ".tmp")
    hdus.writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path


def read_psf_and_ap_corr_map(path: Path) -> tuple[Psf, ApCorrMap]:
    """Read back what `write_psf_and_ap_corr_map` wrote."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"missing final characterization file {path}")
    try:
        with fits.open(path) as hdus:
            psf = object_from_hdu(hdus["PSF"])
            ap_corr_map = object_from_hdu(hdus["APCORR"])
    except (OSError, KeyError) as exc:
        raise TaskError(f"cannot read final characterization {path}: {exc}") from exc
    if not isinstance(psf, Psf) or not isinstance(ap_corr_map, ApCorrMap):
        raise TaskError(f"{path} does not hold a PSF and an aperture-correction map")
    return psf, ap_corr_map


def write_final_characterization(layout: Any, visit: int, result: Struct) -> list[Path]:
    """Persist a `FinalizeCharacterizationTask.run` result in the data layout.

    Parameters
    ----------
    layout : `tasks.data.layout.DataLayout`
        Where to write.
    visit : `int`
        Visit id.
    result : `Struct`
        The task's result.

    Returns
    -------
    paths : `list` [`pathlib.Path`]
        Files written.
    """
    paths = []
    for detector, psf in result.psfs.items():
        path = layout.output_path(PSF_APCORR_NAME, visit, detector, ".fits")
        paths.append(write_psf_and_ap_corr_map(path, psf, result.ap_corr_maps[detector]))
    table = result.output_table
    if len(table):
        for detector, part in table.groupby("detector"):
            paths.append(
                layout.write_output_table(
                    SRC_NAME, part.reset_index(drop=True), visit, int(detector)
                )
            )
    summary = summary_path(layout, visit)
    summary.parent.mkdir(parents=True, exist_ok=True)
    paths.append(layout.write_table(pd.DataFrame(result.psf_ap_corr_cat), summary))
    return paths


def read_final_psf_and_ap_corr_map(layout: Any, visit: int, detector: int) -> tuple[Psf, ApCorrMap]:
    """Read the final PSF and aperture-correction map of one visit/detector."""
    return read_psf_and_ap_corr_map(layout.output_path(PSF_APCORR_NAME, visit, detector, ".fits"))
