"""Split row-parallel work between threads.

The compiled kernels of the image stages (`tasks.dcr.lanczos`,
`tasks.dcr.shift`) release the GIL (numba ``nogil``), so plain threads run
them on all the cores the process may use, without the start-up and copying
costs of processes and without numba's own threading layer (which is not
fork-safe: the pipeline runner may fork).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["run_in_chunks", "thread_count"]


def thread_count() -> int:
    """Return the number of cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_in_chunks(func: Callable[[int, int], object], size: int, min_chunk: int = 64) -> None:
    """Call ``func(start, stop)`` on contiguous chunks covering ``range(size)``.

    Parameters
    ----------
    func : callable
        Processes the items ``start <= i < stop``; chunks never overlap.
    size : `int`
        Number of items (e.g. image rows).
    min_chunk : `int`, optional
        Smallest chunk worth a thread of its own.
    """
    n_chunks = max(min(thread_count(), size // max(min_chunk, 1)), 1)
    if n_chunks == 1:
        func(0, size)
        return
    bounds = np.linspace(0, size, n_chunks + 1).astype(int)
    with ThreadPoolExecutor(n_chunks) as pool:
        futures = [
            pool.submit(func, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        for future in futures:
            future.result()
