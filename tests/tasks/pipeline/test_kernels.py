"""`tasks.pipeline.kernels`: the kernel signatures and the warm-up before the first visit."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
from numba import types
from numba.core.registry import CPUDispatcher

from tasks.pipeline import kernels


def test_compact_signatures_parse_to_numba_types():
    assert kernels.signature_types("f4[:,::1] f4[:,:] u4[::1] b1 i8 f8") == (
        types.Array(types.float32, 2, "C"),
        types.Array(types.float32, 2, "A"),
        types.Array(types.uint32, 1, "C"),
        types.boolean,
        types.int64,
        types.float64,
    )


def test_every_listed_kernel_is_a_cached_numba_function():
    for name, specs in kernels.SIGNATURES.items():
        module, _, function = name.rpartition(".")
        dispatcher = getattr(importlib.import_module(module), function)
        assert isinstance(dispatcher, CPUDispatcher), name
        assert dispatcher._cache is not None and specs, name  # njit(cache=True)
        for spec in specs:
            assert len(kernels.signature_types(spec)) == dispatcher.py_func.__code__.co_argcount


def test_warm_up_makes_every_listed_signature_ready():
    result = kernels.warm_up(max_workers=1, report=None)
    assert result.n_kernels == len(kernels.SIGNATURES)
    compiled = kernels.compiled_signatures()
    for name, specs in kernels.SIGNATURES.items():
        wanted = {kernels.signature_types(spec) for spec in specs}
        assert wanted <= compiled[name], name
    # a second warm-up finds everything in numba's cache: nothing compiled
    again = kernels.warm_up(max_workers=1, report=None)
    assert again.n_compiled == 0 and not again.first_run


def test_a_warmed_kernel_runs_with_the_listed_types():
    from tasks.diffim.pixel_loops import _find_root

    kernels.warm_up(max_workers=1, report=None)
    parents = np.array([0, 0, 1, 2], dtype=np.int64)
    before = set(_find_root.signatures)
    assert _find_root(parents, 3) == 0  # 3 -> 2 -> 1 -> 0
    assert set(_find_root.signatures) == before  # no new compilation


def test_cold_cache_compiles_in_worker_processes_then_loads(tmp_path):
    """A fresh numba cache: two kernels compiled by two processes, later runs only load."""
    script = (
        "from tasks.pipeline.kernels import warm_up\n"
        "names = ['tasks.diffim.pixel_loops._find_root', 'tasks.dcr.shift._prefilter_rows']\n"
        "first = warm_up(max_workers=2, report=None, names=names)\n"
        "again = warm_up(max_workers=2, report=None, names=names)\n"
        "print(first.n_kernels, first.n_compiled, first.workers, again.n_compiled, again.workers)\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def run() -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr
        return [int(x) for x in out.stdout.split()]

    # cold: 2 kernels, 2 signatures compiled in 2 processes; then cached
    assert run() == [2, 2, 2, 0, 0]
    assert any((tmp_path / "numba").rglob("*.nbi"))
    # a new process finds both in the on-disk cache: nothing compiled, no workers
    assert run() == [2, 0, 0, 0, 0]
