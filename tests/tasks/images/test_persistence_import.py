"""A file naming a model class of another package reads back without importing it first."""

import subprocess
import sys
import textwrap

import numpy as np
from astropy.io import fits

from tasks.images.errors import ExposureFormatError
from tasks.images.persistence import object_from_hdu


def test_reader_imports_the_defining_module(tmp_path):
    path = tmp_path / "apcorr.fits"
    writer = textwrap.dedent(
        f"""
        import numpy as np
        from astropy.io import fits
        from tasks.characterize.apcorr import ApCorrMap, PSF_FLUX_FIELD
        from tasks.characterize.chebyshev import ChebyshevBoundedField
        from tasks.images.persistence import object_to_hdu
        field = ChebyshevBoundedField((0, 0, 99, 99), 0, np.array([1.25]))
        hdu = object_to_hdu(ApCorrMap({{PSF_FLUX_FIELD: field}}), "APCORR")
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto({str(path)!r})
        """
    )
    subprocess.run([sys.executable, "-c", writer], check=True)
    # A fresh interpreter that imported only the image model.
    reader = textwrap.dedent(
        f"""
        import sys
        from astropy.io import fits
        from tasks.images.persistence import object_from_hdu
        assert "tasks.characterize" not in sys.modules
        obj = object_from_hdu(fits.open({str(path)!r})[1])
        print(float(obj["base_PsfFlux_instFlux"].evaluate(10.0, 20.0)))
        """
    )
    out = subprocess.run([sys.executable, "-c", reader], check=True, capture_output=True, text=True)
    assert float(out.stdout) == 1.25


def test_untrusted_module_is_never_imported(tmp_path):
    hdu = fits.ImageHDU(np.zeros(1))
    hdu.header["PTYPE"] = "NoSuchModel"
    hdu.header["PMODULE"] = "os"
    try:
        object_from_hdu(hdu)
    except ExposureFormatError as exc:
        assert "NoSuchModel" in str(exc)
    else:
        raise AssertionError("an unregistered PTYPE must be refused")
