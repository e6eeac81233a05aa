"""Registry that lets model objects (PSFs, aperture-correction maps) live in FITS files.

A persistable class has a unique ``persistence_name`` (a string that is
written in the header keyword ``PTYPE``), a method ``to_hdu()`` returning one
FITS HDU, and a class method ``from_hdu(hdu)``.  Classes register themselves
with the `register_persistable` decorator; `object_to_hdu` / `object_from_hdu`
then round-trip any registered object without the exposure code knowing the
class.  Issue 5's fitted PSF and aperture-correction map plug in this way::

    @register_persistable
    class PixelGridPsf(Psf):
        persistence_name = "PixelGridPsf"
        def to_hdu(self): ...
        @classmethod
        def from_hdu(cls, hdu): ...

`params_to_hdu` / `params_from_hdu` help classes whose state is a few
numbers and arrays: values go to a one-row binary table (full float64
precision, unlike header keywords).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from astropy.io import fits

from tasks.images.errors import ExposureFormatError, ImageError

__all__ = [
    "Persistable",
    "register_persistable",
    "registered_classes",
    "object_to_hdu",
    "object_from_hdu",
    "params_to_hdu",
    "params_from_hdu",
]

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


@runtime_checkable
class Persistable(Protocol):
    """What a class needs to be stored in an exposure's FITS file."""

    persistence_name: str

    def to_hdu(self) -> fits.BinTableHDU | fits.ImageHDU:
        """Return the object as one FITS HDU."""
        ...

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU | fits.ImageHDU) -> Any:
        """Rebuild the object from the HDU written by `to_hdu`."""
        ...


def register_persistable(cls: T) -> T:
    """Class decorator: register ``cls`` under its ``persistence_name``.

    Raises
    ------
    ImageError
        If the class lacks ``persistence_name``/``to_hdu``/``from_hdu`` or the
        name is already taken by another class.
    """
    name = getattr(cls, "persistence_name", None)
    if not isinstance(name, str) or not name:
        raise ImageError(f"{cls.__name__} needs a non-empty string persistence_name")
    for attr in ("to_hdu", "from_hdu"):
        if not callable(getattr(cls, attr, None)):
            raise ImageError(f"{cls.__name__} must define {attr}() to be persistable")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ImageError(f"persistence name {name!r} is already used by {existing.__name__}")
    _REGISTRY[name] = cls
    return cls


def registered_classes() -> dict[str, type]:
    """Return a copy of the registry (persistence name → class)."""
    return dict(_REGISTRY)


def object_to_hdu(obj: Any, extname: str) -> fits.BinTableHDU | fits.ImageHDU:
    """Serialise a registered object into an HDU named ``extname``.

    Raises
    ------
    ImageError
        If the object's class is not registered.
    """
    name = getattr(type(obj), "persistence_name", None)
    if name is None or _REGISTRY.get(name) is not type(obj):
        raise ImageError(
            f"{type(obj).__name__} is not registered for persistence "
            "(decorate it with tasks.images.register_persistable)"
        )
    hdu = obj.to_hdu()
    hdu.header["PTYPE"] = name
    hdu.name = extname
    return hdu


def object_from_hdu(hdu: fits.BinTableHDU | fits.ImageHDU) -> Any:
    """Rebuild an object from an HDU written by `object_to_hdu`.

    Raises
    ------
    ExposureFormatError
        If the HDU has no ``PTYPE`` or names a class that is not registered
        (import the module defining it first).
    """
    name = hdu.header.get("PTYPE")
    if name is None:
        raise ExposureFormatError(f"HDU {hdu.name!r} has no PTYPE keyword")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ExposureFormatError(
            f"HDU {hdu.name!r} holds a {name!r}, which no imported module registers"
        )
    try:
        return cls.from_hdu(hdu)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ExposureFormatError(f"cannot read {name!r} from HDU {hdu.name!r}: {exc}") from exc


def params_to_hdu(params: Mapping[str, Any]) -> fits.BinTableHDU:
    """Store named numbers, strings and arrays in a one-row binary table.

    Each value becomes one column holding one cell (arrays keep their shape
    through the ``TDIM`` keyword), so float64 values round-trip bit for bit.
    """
    columns = []
    scalars = []
    for key, value in params.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "US":
            text = str(value)
            columns.append(fits.Column(name=key, format=f"{max(len(text), 1)}A", array=[text]))
            scalars.append(False)
            continue
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int16)
        if arr.dtype.kind == "i" or arr.dtype.kind == "u":
            arr = arr.astype(np.int64)
            code = "K"
        else:
            arr = arr.astype(np.float64)
            code = "D"
        if arr.size == 0:
            raise ImageError(f"cannot store the empty array {key!r}")
        fmt = f"{arr.size}{code}"
        scalars.append(arr.ndim == 0)
        dim = None if arr.ndim <= 1 else "(" + ",".join(str(n) for n in arr.shape[::-1]) + ")"
        columns.append(
            fits.Column(
                name=key,
                format=fmt,
                dim=dim,
                array=arr.reshape((1,) + arr.shape) if arr.ndim else arr.reshape(1),
            )
        )
    hdu = fits.BinTableHDU.from_columns(columns)
    for i, is_scalar in enumerate(scalars, start=1):
        # a 1-element array and a scalar share the format "1D": mark scalars
        hdu.header[f"PSCAL{i}"] = is_scalar
    return hdu


def params_from_hdu(hdu: fits.BinTableHDU) -> dict[str, Any]:
    """Read back the values written by `params_to_hdu` (scalars as Python numbers)."""
    out: dict[str, Any] = {}
    data = hdu.data
    for i, col in enumerate(hdu.columns, start=1):
        value = data[col.name][0]
        if isinstance(value, bytes | str):
            out[col.name] = value.decode() if isinstance(value, bytes) else value
            continue
        arr = np.array(value)
        arr = arr.astype(arr.dtype.newbyteorder("="))
        if hdu.header.get(f"PSCAL{i}", False):
            arr = arr.reshape(())
        elif arr.ndim == 0:
            arr = arr.reshape(1)
        out[col.name] = arr.item() if arr.ndim == 0 else arr
    return out
