"""Integer pixel boxes in parent coordinates.

Pixel convention (as in the LSST stack): pixel centres sit at integer
coordinates, so pixel ``(x, y)`` covers ``[x - 0.5, x + 0.5) × [y - 0.5, y + 0.5)``.
Array element ``[i, j]`` of an image whose box is ``b`` lies at parent position
``x = b.x0 + j``, ``y = b.y0 + i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.images.errors import ImageError

__all__ = ["Box2I"]


@dataclass(frozen=True)
class Box2I:
    """An integer pixel box in parent coordinates.

    Parameters
    ----------
    x0, y0 : `int`
        Parent position of the first pixel (array element ``[0, 0]``).
    width, height : `int`
        Size in pixels (non-negative).
    """

    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ImageError(f"Box2I.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.width < 0 or self.height < 0:
            raise ImageError(f"Box2I size must be non-negative, got {self.width}x{self.height}")

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Box2I:
        """Build a box from its inclusive minimum and maximum pixels."""
        return cls(int(x0), int(y0), int(x1) - int(x0) + 1, int(y1) - int(y0) + 1)

    @property
    def x1(self) -> int:
        """Inclusive maximum x."""
        return self.x0 + self.width - 1

    @property
    def y1(self) -> int:
        """Inclusive maximum y."""
        return self.y0 + self.height - 1

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(height, width)``."""
        return (self.height, self.width)

    @property
    def is_empty(self) -> bool:
        """Whether the box holds no pixel."""
        return self.width == 0 or self.height == 0

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)`` in parent pixel coordinates."""
        return (self.x0 + (self.width - 1) / 2.0, self.y0 + (self.height - 1) / 2.0)

    def contains(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray | bool:
        """Whether points fall in the box (``x0 - 0.5 <= x < x1 + 0.5``), vectorised."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        inside = (
            (x >= self.x0 - 0.5) & (x < self.x1 + 0.5) & (y >= self.y0 - 0.5) & (y < self.y1 + 0.5)
        )
        return bool(inside) if inside.ndim == 0 else inside

    def contains_box(self, other: Box2I) -> bool:
        """Whether ``other`` lies entirely inside this box."""
        return (
            other.x0 >= self.x0
            and other.y0 >= self.y0
            and other.x1 <= self.x1
            and other.y1 <= self.y1
        )

    def grown(self, n: int) -> Box2I:
        """Return the box grown by ``n`` pixels on every side (shrunk if negative)."""
        width = max(self.width + 2 * n, 0)
        height = max(self.height + 2 * n, 0)
        return Box2I(self.x0 - n, self.y0 - n, width, height)

    def shifted(self, dx: int, dy: int) -> Box2I:
        """Return the box moved by ``(dx, dy)`` pixels."""
        return Box2I(self.x0 + dx, self.y0 + dy, self.width, self.height)

    def intersection(self, other: Box2I) -> Box2I | None:
        """Return the overlap with ``other``, or `None` when they do not overlap."""
        x0 = max(self.x0, other.x0)
        y0 = max(self.y0, other.y0)
        x1 = min(self.x1, other.x1)
        y1 = min(self.y1, other.y1)
        if x1 < x0 or y1 < y0:
            return None
        return Box2I.from_corners(x0, y0, x1, y1)

    def union(self, other: Box2I) -> Box2I:
        """Return the smallest box holding both boxes."""
        return Box2I.from_corners(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def slices(self, other: Box2I) -> tuple[slice, slice]:
        """Return the numpy slices selecting ``other`` inside an array of this box.

        Parameters
        ----------
        other : `Box2I`
            A box that lies inside this one.

        Returns
        -------
        rows, cols : `slice`
            ``array[rows, cols]`` is the part of this box's array covered by ``other``.

        Raises
        ------
        ImageError
            If ``other`` is not contained in this box.
        """
        if not self.contains_box(other):
            raise ImageError(f"{other} is not contained in {self}")
        i0 = other.y0 - self.y0
        j0 = other.x0 - self.x0
        return (slice(i0, i0 + other.height), slice(j0, j0 + other.width))

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the parent ``(x, y)`` coordinates of every pixel, each of shape ``shape``."""
        y, x = np.mgrid[self.y0 : self.y0 + self.height, self.x0 : self.x0 + self.width]
        return x, y

    def corners(self) -> np.ndarray:
        """Return the four outer corners ``(x, y)`` of the box (shape ``(4, 2)``, pixel edges)."""
        xa, xb = self.x0 - 0.5, self.x1 + 0.5
        ya, yb = self.y0 - 0.5, self.y1 + 0.5
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
