"""A sky map: tracts, each a tangent-plane grid of overlapping patches.

Each tract has a gnomonic WCS centred on the tract (north up, east left, the
survey's pixel scale) whose pixel coordinates are the tract's **parent**
coordinates.  The tract's inner region ``[0, nx*W) × [0, ny*H)`` is tiled by
patch inner boxes of ``W × H`` pixels; patch ``(ix, iy)`` has the sequential
id ``iy * nx + ix`` and an outer box that is its inner box grown by
``patch_border`` pixels, so neighbouring patches overlap by twice the border.
A patch image (e.g. a DCR sub-filter coadd) is an `Exposure` with the tract
WCS and the patch's outer box.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from tasks.core.base import TaskError
from tasks.images.geom import Box2I
from tasks.images.wcs_utils import make_tan_wcs

__all__ = ["SkyMap", "SkyMapConfig", "TractInfo", "PatchInfo", "SkyMapError"]


class SkyMapError(TaskError):
    """Invalid sky-map configuration or lookup."""


class SkyMapConfig(BaseModel):
    """Definition of a sky map (what ``skymap.yaml`` holds)."""

    model_config = ConfigDict(extra="forbid")

    tract_centers: list[tuple[float, float]] = Field(
        default_factory=lambda: [(150.0, -30.0)],
        description="ICRS (ra, dec) in degrees of each tract centre; tract id = list index.",
    )
    pixel_scale: float = Field(0.2, gt=0, description="Pixel scale of patches, arcsec.")
    patch_inner_size: tuple[int, int] = Field(
        (2000, 2000), description="(width, height) of a patch's inner box in pixels."
    )
    patch_border: int = Field(50, ge=0, description="Overlap border around each patch, pixels.")
    num_patches: tuple[int, int] = Field(
        (5, 5), description="(nx, ny) patches per tract along x and y."
    )


@dataclass(frozen=True)
class PatchInfo:
    """One patch of a tract.

    Attributes
    ----------
    tract : `int`
        Tract id.
    patch : `int`
        Sequential patch id within the tract (``iy * nx + ix``).
    index : `tuple` [`int`, `int`]
        ``(ix, iy)``.
    inner_bbox, outer_bbox : `Box2I`
        Boxes in tract pixel coordinates.
    wcs : `astropy.wcs.WCS`
        The tract WCS (parent coordinates = tract pixels).
    """

    tract: int
    patch: int
    index: tuple[int, int]
    inner_bbox: Box2I
    outer_bbox: Box2I
    wcs: WCS


class TractInfo:
    """One tract: a tangent plane tiled by patches."""

    def __init__(self, tract_id: int, ra: float, dec: float, config: SkyMapConfig) -> None:
        self.tract_id = int(tract_id)
        self.ra = float(ra)
        self.dec = float(dec)
        self.nx, self.ny = config.num_patches
        self.patch_width, self.patch_height = config.patch_inner_size
        self.patch_border = int(config.patch_border)
        self.pixel_scale = float(config.pixel_scale)
        self.bbox = Box2I(0, 0, self.nx * self.patch_width, self.ny * self.patch_height)
        cx, cy = self.bbox.center
        self.wcs = make_tan_wcs(self.ra, self.dec, (cx, cy), self.pixel_scale, 0.0)
        half_diag = math.hypot(self.bbox.width, self.bbox.height) / 2 + self.patch_border
        self.radius_deg = half_diag * self.pixel_scale / 3600.0

    @property
    def num_patches(self) -> int:
        """Number of patches in the tract."""
        return self.nx * self.ny

    def patch_info(self, patch: int) -> PatchInfo:
        """Return the patch with sequential id ``patch``.

        Raises
        ------
        SkyMapError
            If the id is outside the tract.
        """
        if not 0 <= int(patch) < self.num_patches:
            raise SkyMapError(f"tract {self.tract_id} has no patch {patch}")
        iy, ix = divmod(int(patch), self.nx)
        inner = Box2I(
            ix * self.patch_width, iy * self.patch_height, self.patch_width, self.patch_height
        )
        return PatchInfo(
            self.tract_id, int(patch), (ix, iy), inner, inner.grown(self.patch_border), self.wcs
        )

    def patches(self) -> Iterator[PatchInfo]:
        """Iterate over all patches."""
        for patch in range(self.num_patches):
            yield self.patch_info(patch)

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tract pixel coordinates of sky positions (deg)."""
        x, y = self.wcs.wcs_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x), np.asarray(y)

    def angular_distance(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Angular distance (deg) of sky positions from the tract centre."""
        return _angular_distance(self.ra, self.dec, np.asarray(ra), np.asarray(dec))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Whether sky positions fall in the tract's inner region."""
        near = self.angular_distance(ra, dec) < 60.0
        x, y = self.sky_to_pixel(ra, dec)
        return near & np.asarray(self.bbox.contains(x, y))

    def find_patches(
        self, ra: np.ndarray, dec: np.ndarray, margin: float = 0.0, use_outer: bool = True
    ) -> list[PatchInfo]:
        """Patches whose box overlaps the convex sky polygon with vertices ``ra, dec``.

        Parameters
        ----------
        ra, dec : `numpy.ndarray`
            Vertices (deg, in order around the polygon), e.g. detector corners.
        margin : `float`, optional
            Grow the patch boxes by this many pixels before testing.
        use_outer : `bool`, optional
            Test the outer (overlapping) boxes rather than the inner ones.
        """
        if np.any(self.angular_distance(ra, dec) > 60.0):
            return []
        x, y = self.sky_to_pixel(ra, dec)
        poly = np.column_stack([x, y])
        found = []
        for info in self.patches():
            box = info.outer_bbox if use_outer else info.inner_bbox
            rect = box.grown(int(math.ceil(margin))).corners()
            if _convex_polygons_overlap(poly, rect):
                found.append(info)
        return found


def _angular_distance(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r0, d0, r, d = map(np.radians, (ra0, dec0, ra, dec))
    cos_d = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
    return np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0)))


def _convex_polygons_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons given as ``(n, 2)`` vertex arrays."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.column_stack([-edges[:, 1], edges[:, 0]])
        for normal in normals:
            if not np.any(normal):
                continue
            pa = a @ normal
            pb = b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


class SkyMap:
    """A list of tracts sharing one patch geometry.

    Parameters
    ----------
    config : `SkyMapConfig`, optional
        Definition of the tracts and patches.
    """

    def __init__(self, config: SkyMapConfig | None = None) -> None:
        self.config = config if config is not None else SkyMapConfig()
        if not self.config.tract_centers:
            raise SkyMapError("a sky map needs at least one tract")
        if min(self.config.patch_inner_size) < 1 or min(self.config.num_patches) < 1:
            raise SkyMapError("patch sizes and counts must be positive")
        self.tracts = [
            TractInfo(i, ra, dec, self.config)
            for i, (ra, dec) in enumerate(self.config.tract_centers)
        ]

    def __getitem__(self, tract: int) -> TractInfo:
        try:
            return self.tracts[int(tract)]
        except (IndexError, ValueError, TypeError):
            raise SkyMapError(f"no tract {tract!r} in this sky map") from None

    def __iter__(self) -> Iterator[TractInfo]:
        return iter(self.tracts)

    def __len__(self) -> int:
        return len(self.tracts)

    def find_tract(self, ra: float, dec: float) -> TractInfo:
        """Return the tract whose centre is nearest to ``(ra, dec)``."""
        dist = [t.angular_distance(ra, dec) for t in self.tracts]
        return self.tracts[int(np.argmin(dist))]

    def find_patches_for_footprint(
        self, wcs: WCS, bbox: Box2I, margin: float = 0.0, use_outer: bool = True
    ) -> list[PatchInfo]:
        """Return every patch (over all tracts) overlapping a detector footprint.

        Parameters
        ----------
        wcs : `astropy.wcs.WCS`
            Detector WCS in parent pixel coordinates.
        bbox : `Box2I`
            Detector box.
        margin : `float`, optional
            Grow the footprint by this many detector pixels.
        use_outer : `bool`, optional
            Test patch outer boxes (default) or inner boxes.
        """
        corners = bbox.grown(int(math.ceil(margin))).corners()
        ra, dec = wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
        found: list[PatchInfo] = []
        for tract in self.tracts:
            found.extend(tract.find_patches(ra, dec, use_outer=use_outer))
        return found

    def to_dict(self) -> dict:
        """Return the definition as plain data (for YAML)."""
        data = self.config.model_dump()
        data["tract_centers"] = [list(c) for c in data["tract_centers"]]
        data["patch_inner_size"] = list(data["patch_inner_size"])
        data["num_patches"] = list(data["num_patches"])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SkyMap:
        """Rebuild a sky map from `to_dict` output."""
        try:
            return cls(SkyMapConfig(**data))
        except ValueError as exc:
            raise SkyMapError(f"invalid sky map definition: {exc}") from exc
