"""DAOPHOT II PSF files (ZTF's ``sciimgdao.psf`` sidecars) as a `tasks.images.psf.Psf`.

IPAC's ZTF pipeline fits its PSF catalogs with DAOPHOT and publishes the PSF
as a DAOPHOT II text file (not PSFEx: GalSim's PSFEx reader does not apply).
The format, from Stetson's DAOPHOT II manual:

- line 1: label (``GAUSSIAN``), ``NPSF`` (look-up table size), ``NPAR``
  (analytic parameters), ``NEXP`` (tables: 1, 3 or 6 for constant, linear
  or quadratic spatial variation), ``NFRAC``, the PSF star magnitude, the
  central height ``HPSF`` (data units) of the analytic function, and the
  reference position ``XPSF``, ``YPSF``;
- line 2: the ``NPAR`` parameters (for ``GAUSSIAN``: half-widths at half
  maximum in x and y, pixels);
- then ``NEXP`` tables of ``NPSF x NPSF`` values (Fortran order, x fastest,
  ``1X,6E13.6``): the residuals of the data from the analytic function,
  sampled every half pixel around the centre, in data units for a star of
  central height ``HPSF``.

The model at offset ``(dx, dy)`` from a star at ``(x, y)`` is
``HPSF G(dx; hx) G(dy; hy) / (hx hy) + sum_k c_k(x, y) T_k(2 dx, 2 dy)`` inside
the table's radius (zero outside), where ``G(d; h)`` integrates
``exp(-ln 2 (u / h)**2)`` over the pixel (DAOPHOT's pixel-integrated
Gaussian, which carries this ``1 / (hx hy)`` normalisation), ``c`` =
``1``, ``X``, ``Y`` (, ``1.5 X² - 0.5``, ``X Y``, ``1.5 Y² - 0.5``) with
``X = x / XPSF - 1``, ``Y = y / YPSF - 1`` (1-based quadrant positions), and
the tables are interpolated with a cubic convolution kernel (Keys,
``a = -1/2``, DAOPHOT's bicubic).  `DaophotPsf` returns it normalised to unit
sum.  Checked against IPAC's own PSF-fit fluxes in
``tests/tasks/ingest/test_ztf_forced_phot.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.special import erf

from tasks.images.psf import Psf, nearest_pixel
from tasks.ingest.errors import IngestError

__all__ = ["DaophotPsf"]


class DaophotPsf(Psf):
    """A DAOPHOT II PSF with a Gaussian analytic part (see the module docstring)."""

    def __init__(
        self,
        hwhm: tuple[float, float],
        height: float,
        tables: np.ndarray,
        reference: tuple[float, float],
    ) -> None:
        self.hwhm = (float(hwhm[0]), float(hwhm[1]))
        self.height = float(height)
        self.tables = np.asarray(tables, dtype=np.float64)
        self.reference = (float(reference[0]), float(reference[1]))
        npsf = self.tables.shape[-1]
        self._half = (npsf - 1) // 4  # pixels covered on each side
        self._mid = (npsf - 1) / 2.0

    @classmethod
    def read(cls, path: str | Path) -> DaophotPsf:
        """Read a DAOPHOT II ``.psf`` file."""
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise IngestError(f"cannot read the PSF file {path}: {exc.strerror}") from None
        try:
            head = lines[0].split()
            label = head[0]
            npsf, npar, nexp, nfrac = (int(v) for v in head[1:5])
            height = float(head[6])
            xpsf, ypsf = float(head[7]), float(head[8])
            params = [float(v) for v in lines[1].split()]
            values: list[float] = []
            for line in lines[2:]:
                body = line[1:]
                values += [
                    float(body[i : i + 13])
                    for i in range(0, len(body), 13)
                    if body[i : i + 13].strip()
                ]
        except (IndexError, ValueError):
            raise IngestError(f"{path} is not a DAOPHOT II PSF file") from None
        if label != "GAUSSIAN" or npar != 2 or nfrac != 0:
            raise IngestError(f"{path}: only GAUSSIAN DAOPHOT PSFs are supported, got {label}")
        if nexp not in (1, 3, 6) or len(values) < npsf * npsf * nexp or len(params) < 2:
            raise IngestError(f"{path}: truncated DAOPHOT PSF ({len(values)} table values)")
        tables = np.array(values[: npsf * npsf * nexp]).reshape(nexp, npsf, npsf)
        return cls((params[0], params[1]), height, tables, (xpsf, ypsf))

    @property
    def kernel_size(self) -> int:
        """Odd width covering the look-up table."""
        return 2 * self._half + 1

    def _coefficients(self, x: float, y: float) -> np.ndarray:
        bx = (x + 1.0) / self.reference[0] - 1.0
        by = (y + 1.0) / self.reference[1] - 1.0
        terms = [1.0, bx, by, 1.5 * bx * bx - 0.5, bx * by, 1.5 * by * by - 0.5]
        return np.array(terms[: len(self.tables)])

    def _model(self, x: float, y: float) -> np.ndarray:
        """Unnormalised model on the kernel grid around ``nearest_pixel(x, y)``."""
        half = self._half
        dx = np.arange(-half, half + 1) - (x - nearest_pixel(x))
        dy = np.arange(-half, half + 1) - (y - nearest_pixel(y))
        hx, hy = self.hwhm
        model = self.height * np.outer(_integrated(dy, hy), _integrated(dx, hx)) / (hx * hy)
        ty, tx = np.meshgrid(self._mid + 2.0 * dy, self._mid + 2.0 * dx, indexing="ij")
        for coeff, table in zip(self._coefficients(x, y), self.tables, strict=True):
            model += coeff * _cubic_convolution(table, ty, tx)
        ry, rx = np.meshgrid(dy, dx, indexing="ij")
        return np.where(np.hypot(rx, ry) <= half, model, 0.0)

    def compute_image(self, x: float, y: float) -> np.ndarray:
        """PSF centred at the sub-pixel offset of ``(x, y)``, unit sum."""
        model = self._model(float(x), float(y))
        total = model.sum()
        if not total > 0:
            raise IngestError("the DAOPHOT PSF model has no positive flux here")
        return model / total

    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """PSF at ``(x, y)`` centred on the central pixel, unit sum."""
        return self.compute_image(float(nearest_pixel(x)), float(nearest_pixel(y)))

    def compute_shape(self, x, y) -> tuple:
        """Second moments of the kernel image."""
        xs = np.atleast_1d(np.asarray(x, float))
        ys = np.atleast_1d(np.asarray(y, float))
        half = self._half
        grid = np.arange(-half, half + 1, dtype=float)
        out = []
        for xx, yy in zip(xs, ys, strict=True):
            k = self.compute_kernel_image(xx, yy)
            px, py = k.sum(axis=0), k.sum(axis=1)
            mx, my = (px * grid).sum(), (py * grid).sum()
            ixx = (px * (grid - mx) ** 2).sum()
            iyy = (py * (grid - my) ** 2).sum()
            ixy = (k * np.outer(grid - my, grid - mx)).sum()
            out.append((ixx, iyy, ixy))
        arr = np.array(out)
        if np.ndim(x) == 0:
            return float(arr[0, 0]), float(arr[0, 1]), float(arr[0, 2])
        return arr[:, 0], arr[:, 1], arr[:, 2]


def _keys_weights(t: np.ndarray) -> np.ndarray:
    """Weights of the 4 samples around a point at fraction ``t`` (Keys cubic, a = -1/2)."""
    t2, t3 = t * t, t * t * t
    return np.stack(
        [
            -0.5 * t3 + t2 - 0.5 * t,
            1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t,
            0.5 * t3 - 0.5 * t2,
        ]
    )


def _cubic_convolution(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Interpolate ``table`` at fractional ``(rows, cols)``; samples off the table count 0."""
    n0, n1 = table.shape
    r0 = np.floor(rows).astype(int)
    c0 = np.floor(cols).astype(int)
    wr = _keys_weights(rows - r0)
    wc = _keys_weights(cols - c0)
    out = np.zeros(rows.shape)
    for i in range(4):
        r = r0 + i - 1
        for j in range(4):
            c = c0 + j - 1
            ok = (r >= 0) & (r < n0) & (c >= 0) & (c < n1)
            value = table[np.clip(r, 0, n0 - 1), np.clip(c, 0, n1 - 1)]
            out += np.where(ok, value, 0.0) * wr[i] * wc[j]
    return out


def _integrated(offsets: np.ndarray, hwhm: float) -> np.ndarray:
    """1-D Gaussian of unit central value, HWHM ``hwhm``, integrated over each pixel."""
    sigma = hwhm / math.sqrt(2.0 * math.log(2.0))
    scale = math.sqrt(2.0) * sigma
    return (
        sigma
        * math.sqrt(math.pi / 2.0)
        * (erf((offsets + 0.5) / scale) - erf((offsets - 0.5) / scale))
    )
