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
numbers and small arrays: values go to header cards as exact hexadecimal
strings (full float64 precision, unlike plain float cards).
"""

from __future__ import annotations

import contextlib
import importlib
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
# Packages whose modules may be imported to find the class an HDU names: a
# file can only make us import our own code, never an arbitrary module.
_TRUSTED_PACKAGES = ("tasks.", "apdb.")


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
    hdu.header["PMODULE"] = (type(obj).__module__, "module that defines PTYPE")
    hdu.name = extname
    return hdu


def object_from_hdu(hdu: fits.BinTableHDU | fits.ImageHDU) -> Any:
    """Rebuild an object from an HDU written by `object_to_hdu`.

    Raises
    ------
    ExposureFormatError
        If the HDU has no ``PTYPE`` or names a class that is not registered
        and whose module (``PMODULE``, one of our packages) cannot be imported.
    """
    name = hdu.header.get("PTYPE")
    if name is None:
        raise ExposureFormatError(f"HDU {hdu.name!r} has no PTYPE keyword")
    cls = _REGISTRY.get(name)
    module = hdu.header.get("PMODULE")
    if cls is None and isinstance(module, str) and module.startswith(_TRUSTED_PACKAGES):
        # The defining module registers the class when imported.
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
        cls = _REGISTRY.get(name)
    if cls is None:
        raise ExposureFormatError(
            f"HDU {hdu.name!r} holds a {name!r}, which no imported module registers"
        )
    try:
        return cls.from_hdu(hdu)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ExposureFormatError(f"cannot read {name!r} from HDU {hdu.name!r}: {exc}") from exc


def _encode(key: str, value: Any) -> tuple[str, str, str]:
    """Return (kind, shape, text) for one parameter; floats as exact hex strings."""
    if isinstance(value, str | bytes):
        return "s", "", value.decode() if isinstance(value, bytes) else value
    arr = np.asarray(value)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        items = [str(int(v)) for v in arr.ravel()]
        kind = "i"
    elif arr.dtype.kind == "f":
        items = [float(v).hex() for v in arr.ravel()]
        kind = "f"
    else:
        raise ImageError(f"cannot store parameter {key!r} of type {arr.dtype}")
    if arr.ndim == 0:
        return kind, "", items[0]
    if arr.size == 0:
        raise ImageError(f"cannot store the empty array {key!r}")
    return kind.upper(), ",".join(str(n) for n in arr.shape), " ".join(items)


def _decode(kind: str, shape: str, text: str) -> Any:
    if kind == "s":
        return text
    if kind == "f":
        return float.fromhex(text)
    if kind == "i":
        return int(text)
    dims = tuple(int(n) for n in shape.split(","))
    items = text.split()
    if kind == "F":
        return np.array([float.fromhex(v) for v in items], dtype=np.float64).reshape(dims)
    if kind == "I":
        return np.array([int(v) for v in items], dtype=np.int64).reshape(dims)
    raise ValueError(f"unknown parameter kind {kind!r}")


def params_to_hdu(params: Mapping[str, Any]) -> fits.ImageHDU:
    """Store named numbers, strings and small arrays in the header of a data-less HDU.

    Parameter ``n`` (1-based) is written as the cards ``PNAMEn`` (name),
    ``PKINDn`` (``f``/``i``/``s`` scalars, ``F``/``I`` arrays), ``PSHAPEn`` and
    ``PVALn``; floats are written as exact hexadecimal strings
    (`float.hex`), so values round-trip bit for bit (plain FITS float cards
    keep about 14 digits).  Header cards are much cheaper to build than a
    binary table, which matters when thousands of exposures are written.
    """
    hdu = fits.ImageHDU()
    header = hdu.header
    for n, (key, value) in enumerate(params.items(), start=1):
        kind, shape, text = _encode(key, value)
        header[f"PNAME{n}"] = key
        header[f"PKIND{n}"] = kind
        if shape:
            header[f"PSHAPE{n}"] = shape
        header[f"PVAL{n}"] = text
    return hdu


def params_from_hdu(hdu: fits.ImageHDU | fits.BinTableHDU) -> dict[str, Any]:
    """Read back the values written by `params_to_hdu` (scalars as Python numbers)."""
    header = hdu.header
    out: dict[str, Any] = {}
    n = 1
    while f"PNAME{n}" in header:
        kind = header[f"PKIND{n}"]
        out[header[f"PNAME{n}"]] = _decode(kind, header.get(f"PSHAPE{n}", ""), header[f"PVAL{n}"])
        n += 1
    if n == 1 and isinstance(hdu, fits.BinTableHDU):
        raise ValueError(f"HDU {hdu.name!r} holds no parameters")
    return out
