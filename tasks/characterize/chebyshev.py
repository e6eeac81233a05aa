"""2-D Chebyshev polynomial fields over a detector bounding box.

A `ChebyshevBoundedField` is the analogue of Rubin's
``lsst.afw.math.ChebyshevBoundedField``: a sum of products of Chebyshev
polynomials ``T_i(u) T_j(v)`` with ``i + j <= order`` (the triangular
form), where ``u, v`` map the bounding box onto ``[-1, 1]``.  It is used for
aperture-correction maps and, through `chebyshev_basis`, as the spatial
basis of the pixel-grid PSF model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.core.base import TaskError

__all__ = ["ChebyshevBoundedField", "chebyshev_basis", "term_orders"]


def term_orders(order: int) -> list[tuple[int, int]]:
    """Return the ``(i, j)`` degrees of the triangular basis, ``i + j <= order``."""
    if order < 0:
        raise TaskError(f"Chebyshev order must be >= 0, got {order}")
    return [(i, total - i) for total in range(order + 1) for i in range(total, -1, -1)]


def _scaled(coord: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` onto ``[-1, 1]`` (a degenerate range maps to 0)."""
    coord = np.asarray(coord, dtype=np.float64)
    if hi <= lo:
        return np.zeros_like(coord)
    return (2.0 * coord - (lo + hi)) / (hi - lo)


def chebyshev_basis(
    x: np.ndarray, y: np.ndarray, bbox: tuple[float, float, float, float], order: int
) -> np.ndarray:
    """Evaluate the triangular 2-D Chebyshev basis at positions.

    Parameters
    ----------
    x, y : `numpy.ndarray`
        Positions (parent pixels).
    bbox : `tuple`
        ``(xmin, ymin, xmax, ymax)`` mapped onto ``[-1, 1]``; pixel-edge
        coordinates (``x0 - 0.5`` to ``x1 + 0.5``) are the usual choice.
    order : `int`
        Maximum total degree.

    Returns
    -------
    basis : `numpy.ndarray`, shape ``(n, n_terms)``
    """
    u = _scaled(np.atleast_1d(x), bbox[0], bbox[2]).ravel()
    v = _scaled(np.atleast_1d(y), bbox[1], bbox[3]).ravel()
    tu = np.polynomial.chebyshev.chebvander(u, order)
    tv = np.polynomial.chebyshev.chebvander(v, order)
    return np.stack([tu[:, i] * tv[:, j] for i, j in term_orders(order)], axis=1)


@dataclass
class ChebyshevBoundedField:
    """A smooth scalar field over a box: triangular 2-D Chebyshev series.

    Parameters
    ----------
    bbox : `tuple`
        ``(xmin, ymin, xmax, ymax)`` of the domain (parent pixel coordinates).
    order : `int`
        Maximum total degree.
    coefficients : `numpy.ndarray`
        One coefficient per term of `term_orders`.
    """

    bbox: tuple[float, float, float, float]
    order: int
    coefficients: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.bbox = tuple(float(b) for b in self.bbox)  # type: ignore[assignment]
        self.order = int(self.order)
        self.coefficients = np.asarray(self.coefficients, dtype=np.float64).ravel()
        n_terms = len(term_orders(self.order))
        if self.coefficients.size != n_terms:
            raise TaskError(
                f"order {self.order} needs {n_terms} coefficients, got {self.coefficients.size}"
            )

    def evaluate(self, x: Any, y: Any) -> np.ndarray:
        """Evaluate the field at positions (vectorised; output has the input's shape)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = np.broadcast(x, y).shape
        xb, yb = np.broadcast_arrays(x, y)
        values = chebyshev_basis(xb.ravel(), yb.ravel(), self.bbox, self.order) @ self.coefficients
        return values.reshape(shape)

    __call__ = evaluate

    def mean(self, n: int = 32) -> float:
        """Mean of the field over its box (sampled on an ``n x n`` grid)."""
        xs = np.linspace(self.bbox[0], self.bbox[2], n)
        ys = np.linspace(self.bbox[1], self.bbox[3], n)
        gx, gy = np.meshgrid(xs, ys)
        return float(self.evaluate(gx, gy).mean())

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        values: np.ndarray,
        bbox: tuple[float, float, float, float],
        order: int = 2,
        errors: np.ndarray | None = None,
        n_sigma: float = 3.0,
        n_iter: int = 3,
    ) -> tuple[ChebyshevBoundedField, np.ndarray]:
        """Fit a field to scattered values with iterative sigma clipping.

        Parameters
        ----------
        x, y, values : `numpy.ndarray`
            Positions and measured values; non-finite entries are ignored.
        bbox : `tuple`
            Domain ``(xmin, ymin, xmax, ymax)``.
        order : `int`, optional
            Maximum total degree (2 by default).
        errors : `numpy.ndarray`, optional
            1-sigma errors of the values (weights ``1 / errors**2``);
            unweighted when omitted.
        n_sigma : `float`, optional
            Clip threshold in units of the robust scatter of the
            normalised residuals (1.4826 MAD).
        n_iter : `int`, optional
            Maximum number of clipping iterations.

        Returns
        -------
        field : `ChebyshevBoundedField`
        used : `numpy.ndarray` of bool
            Values kept by the final fit.

        Raises
        ------
        TaskError
            If fewer usable values than terms remain.
        """
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        values = np.asarray(values, dtype=np.float64).ravel()
        if errors is None:
            weights = np.ones_like(values)
        else:
            errors = np.asarray(errors, dtype=np.float64).ravel()
            with np.errstate(divide="ignore"):
                weights = 1.0 / errors**2
        used = np.isfinite(x) & np.isfinite(y) & np.isfinite(values) & np.isfinite(weights)
        used &= weights > 0
        valid = used.copy()
        n_terms = len(term_orders(order))
        basis = chebyshev_basis(x, y, bbox, order)
        coefficients = np.zeros(n_terms)
        for _ in range(max(n_iter, 0) + 1):
            if used.sum() < n_terms:
                raise TaskError(
                    f"cannot fit an order-{order} field with {int(used.sum())} points "
                    f"(needs at least {n_terms})"
                )
            sw = np.sqrt(weights[used])
            coefficients, *_ = np.linalg.lstsq(
                basis[used] * sw[:, None], values[used] * sw, rcond=None
            )
            resid = (values - basis @ coefficients) * np.sqrt(np.where(valid, weights, 0.0))
            scatter = 1.4826 * np.median(np.abs(resid[used] - np.median(resid[used])))
            if not scatter > 0:
                break
            # clip against the current fit; points clipped by an earlier, worse fit may return
            keep = valid & (np.abs(resid) <= n_sigma * scatter)
            if np.array_equal(keep, used) or keep.sum() < n_terms:
                break
            used = keep
        return cls(bbox=bbox, order=order, coefficients=coefficients), used

    @classmethod
    def fit_best_order(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        values: np.ndarray,
        bbox: tuple[float, float, float, float],
        max_order: int = 2,
        errors: np.ndarray | None = None,
        n_sigma: float = 3.0,
        n_iter: int = 3,
    ) -> tuple[ChebyshevBoundedField, np.ndarray]:
        """Fit orders ``0 .. max_order`` and keep the one the data support.

        The criterion is a robust BIC: ``sum(min(r², n_sigma²)) + n_terms ln(N)``
        over all usable values, with ``r`` the residuals in units of the errors,
        so clipped points cost the same at every order.  With few or noisy
        points this prefers a low order instead of a field that swings at the
        corners of the detector.

        Returns
        -------
        field : `ChebyshevBoundedField`
        used : `numpy.ndarray` of bool
        """
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        values = np.asarray(values, dtype=np.float64).ravel()
        sigma = np.ones_like(values) if errors is None else np.asarray(errors, float).ravel()
        valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(values) & np.isfinite(sigma)
        valid &= sigma > 0
        best: tuple[float, ChebyshevBoundedField, np.ndarray] | None = None
        for order in range(max_order + 1):
            try:
                field, used = cls.fit(x, y, values, bbox, order, errors, n_sigma, n_iter)
            except TaskError:
                break
            r = (values[valid] - field.evaluate(x[valid], y[valid])) / sigma[valid]
            score = np.minimum(r * r, n_sigma**2).sum()
            score += len(term_orders(order)) * np.log(valid.sum())
            if best is None or score < best[0]:
                best = (score, field, used)
        if best is None:
            raise TaskError(f"cannot fit a field to {int(valid.sum())} points")
        return best[1], best[2]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON/FITS-friendly description of the field."""
        return {
            "bbox": list(self.bbox),
            "order": self.order,
            "coefficients": self.coefficients.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChebyshevBoundedField:
        """Rebuild a field from `to_dict` output."""
        return cls(
            bbox=tuple(data["bbox"]),  # type: ignore[arg-type]
            order=int(data["order"]),
            coefficients=np.asarray(data["coefficients"], dtype=np.float64),
        )
