"""The compiled (numba) kernels of the per-visit chain, compiled before the first visit.

The kernels are ``numba.njit(cache=True)`` functions: compiled on their first
call with given argument types, then loaded from numba's on-disk cache
(``__pycache__`` next to the module, or ``$NUMBA_CACHE_DIR``) by every later
run.  Left to themselves they compile inside the first visit, which makes
the first run several seconds slower and books that time to the science
stages.  `warm_up` compiles them up front, from the argument types the
pipeline uses (`SIGNATURES`), in parallel worker processes when the cache is
cold and more than one CPU is available; on later runs it only loads them.

`SIGNATURES` must list every type signature the pipeline compiles: the
end-to-end test checks that a run compiles nothing else.
"""

from __future__ import annotations

import importlib
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

__all__ = ["SIGNATURES", "KernelWarmUp", "compiled_signatures", "signature_types", "warm_up"]

# Argument types, spelled compactly and separated by spaces: "f4[:,::1]" is a
# C-contiguous 2-d float32 array, "f4[:,:]" any 2-d float32 array, "f8" a
# float64 scalar, "b1" a boolean.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "tasks.dcr.lanczos._taps": ("f8 f4[:,::1] f4[::1]",),
    "tasks.dcr.lanczos._warp_rows": (
        "i8 i8 i8 i8 f8 f8 f8 f8 f8[:,::1] f8[:,::1] f4[:,::1] f4[:,::1] u4[:,::1] b1[:,::1] "
        "b1 u4 u4 f4[:,::1] f4[:,::1] f4[:,::1] u4[:,::1]",
    ),
    "tasks.dcr.mosaic._accumulate": (
        "f4[:,::1] f4[:,::1] u4[:,::1] f8 f8[:,::1] f8[:,::1] i4[:,::1] u4[:,::1] i8 i8",
    ),
    "tasks.dcr.mosaic._finish": (
        "f8[:,::1] f8[:,::1] i4[:,::1] u4[:,::1] u4 f4[:,::1] f4[:,::1] i8 i8",
    ),
    "tasks.dcr.shift._add_taps": ("f4[:,:] i8 f8[::1] i8 f8[::1] f4[:,::1] i8 i8",),
    "tasks.dcr.shift._count_missing": ("f4[:,:] u4[:,:] u4",),
    "tasks.dcr.shift._first_usable": ("f4[:,:] u4[:,:] u4",),
    "tasks.dcr.shift._prefilter_columns": ("f4[:,:]",),
    "tasks.dcr.shift._prefilter_rows": ("f4[:,::1]",),
    "tasks.diffim.pixel_loops._collect": ("f4[:,::1] f4 b1 b1",),
    "tasks.diffim.pixel_loops._dilate_cols": ("b1[:,::1] b1[::1] i8 b1[:,::1] i8 i8",),
    "tasks.diffim.pixel_loops._dilate_rows": ("b1[:,::1] i8 b1[:,::1] b1[::1] i8 i8",),
    "tasks.diffim.pixel_loops._find_root": ("i8[::1] i8",),
    "tasks.diffim.pixel_loops._footprints": ("f4[:,::1] i8[::1] f8 i8",),
    "tasks.diffim.pixel_loops._pixel_snr": ("f4[:,::1] f4[:,::1] b1[:,::1] f4[:,::1] i8 i8",),
    "tasks.diffim.pixel_loops._prepare": (
        "f4[:,::1] f4[:,::1] b1[:,::1] u4[:,::1] u4 f4[:,::1] f4[:,::1] b1[:,::1] i8 i8",
    ),
    "tasks.diffim.pixel_loops._ratio": (
        "f4[:,::1] f4[:,::1] f4 b1[:,::1] f4[:,::1] f4[:,::1] i8 i8",
    ),
    "tasks.diffim.pixel_loops.add_stamps": ("f4[:,::1] f4[:,:,::1] i8[::1] i8[::1] f4",),
    "tasks.diffim.plane_loops._assemble": (
        "f4[:,::1] f4[:,::1] u4[:,::1] f4[:,::1] f4[:,::1] b1[:,::1] i8 i8 u4 f4[:,::1] "
        "f4[:,::1] u4[:,::1] f4[:,::1] f4[:,::1] u4[:,::1] i8 i8",
    ),
    "tasks.diffim.plane_loops._prepare_template": (
        "f4[:,::1] f4[:,::1] u4[:,::1] u4 f4 f4[:,::1] f4[:,::1] b1[:,::1] i8 i8",
    ),
    "tasks.diffim.plane_loops._science_grid": (
        "f4[:,::1] f4[:,::1] u4[:,::1] u4 b1[:,::1] i8 i8 f4[:,::1] f4[:,::1] b1[:,::1] i8 i8",
    ),
}
"""Kernel (``module.function``) → the argument types the pipeline calls it with."""

_SCALARS = {"f4": "float32", "f8": "float64", "i4": "int32", "i8": "int64", "u4": "uint32"}


def _type(spec: str):
    """Return the numba type of one compact spelling (see `SIGNATURES`)."""
    from numba import types

    base, _, dims = spec.partition("[")
    dtype = types.boolean if base == "b1" else getattr(types, _SCALARS[base])
    if not dims:
        return dtype
    axes = dims.rstrip("]").split(",")
    layout = "C" if axes[-1] == "::1" else "A"
    return types.Array(dtype, len(axes), layout)


def signature_types(spec: str) -> tuple:
    """Return the numba argument types of one `SIGNATURES` entry."""
    return tuple(_type(s) for s in spec.split())


def _dispatcher(name: str):
    module, _, function = name.rpartition(".")
    return getattr(importlib.import_module(module), function)


def _compile(name: str) -> tuple[str, int, int, float]:
    """Compile (or load) one kernel's signatures; return (name, hits, misses, seconds)."""
    start = time.perf_counter()
    dispatcher = _dispatcher(name)

    def counts() -> tuple[int, int]:
        # numba's statistics add up over the process: count this call's only
        stats = dispatcher.stats
        return sum(stats.cache_hits.values()), sum(stats.cache_misses.values())

    hits0, misses0 = counts()
    for spec in SIGNATURES[name]:
        dispatcher.compile(signature_types(spec))
    hits, misses = counts()
    return name, hits - hits0, misses - misses0, time.perf_counter() - start


def _cached_on_disk(name: str) -> bool:
    """Whether numba's cache holds an index for this kernel (numba internals; False if unsure)."""
    try:
        index = Path(_dispatcher(name)._cache._cache_file._index_path)
    except AttributeError:  # pragma: no cover - another numba version
        return False
    return index.is_file()


@dataclass
class KernelWarmUp:
    """What `warm_up` did.

    Attributes
    ----------
    n_kernels : `int`
        Kernels made ready.
    n_compiled : `int`
        Signatures compiled now (0 when everything came from the cache).
    seconds : `float`
        Wall time of the warm-up.
    workers : `int`
        Processes that compiled (0: none, everything was loaded here).
    """

    n_kernels: int
    n_compiled: int
    seconds: float
    workers: int

    @property
    def first_run(self) -> bool:
        """Whether kernels had to be compiled (a cold cache)."""
        return self.n_compiled > 0


def warm_up(
    max_workers: int | None = None, report=print, names: list[str] | None = None
) -> KernelWarmUp:
    """Compile every kernel of `SIGNATURES`, or load it from numba's cache.

    Parameters
    ----------
    max_workers : `int`, optional
        Processes compiling in parallel when the cache is cold (default: the
        CPUs available, at most 4); 1 compiles here, sequentially.
    report : callable, optional
        Called with one line before compiling (only on a cold cache) and one
        after; `None` for silence.
    names : `list` [`str`], optional
        Only these kernels of `SIGNATURES` (default: all).

    Returns
    -------
    result : `KernelWarmUp`
    """
    start = time.perf_counter()
    names = sorted(SIGNATURES if names is None else names)
    cold = [name for name in names if not _cached_on_disk(name)]
    if max_workers is None:
        max_workers = min(4, len(os.sched_getaffinity(0)))
    workers = 0
    n_compiled = 0
    if cold and report is not None:
        report(f"compiling {len(cold)} kernels (first run only; cached for the next runs) ...")
    if len(cold) > 1 and max_workers > 1:
        workers = min(max_workers, len(cold))
        try:
            # fork: the workers inherit the imported modules; they leave with
            # os._exit, so nothing inherited (e.g. database connections) is closed.
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                n_compiled = sum(misses for _, _, misses, _ in pool.map(_compile, cold))
        except (OSError, BrokenProcessPool):  # no processes here: compile in this one
            workers = 0
    for name in names:  # load (or, without workers, compile) in this process
        _, _, misses, _ = _compile(name)
        if not workers:
            n_compiled += misses
    result = KernelWarmUp(len(names), n_compiled, time.perf_counter() - start, workers)
    if cold and report is not None:
        where = f" in {workers} processes" if workers else ""
        report(f"  compiled {result.n_compiled} kernel signatures{where} in {result.seconds:.1f} s")
    return result


def compiled_signatures() -> dict[str, set[tuple]]:
    """Return the signatures every loaded ``tasks`` kernel has compiled or loaded so far.

    Keys are ``module.function`` of each numba dispatcher defined in an
    imported ``tasks`` module (kernels outside `SIGNATURES` included).
    """
    import sys

    from numba.core.registry import CPUDispatcher

    out = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("tasks."):
            continue
        for attr, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == module_name:
                out[f"{module_name}.{attr}"] = {tuple(sig) for sig in obj.signatures}
    return out
