"""Concurrent writers and a writer killed with SIGKILL in the middle of `store`."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

from astropy.time import Time

from apdb import Apdb

WORKER = str(Path(__file__).with_name("store_worker.py"))
_spec = importlib.util.spec_from_file_location("store_worker", WORKER)
store_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_worker)
N = 3000
LATER = Time(60010.0, format="mjd", scale="tai")


def _spawn(url: str, visit: int, detector: int, mode: str, barrier: Path | None = None):
    args = [sys.executable, WORKER, url, str(visit), str(detector), str(N), mode]
    if barrier is not None:
        args.append(str(barrier))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def test_two_processes_store_detectors_of_one_visit_at_once(apdb_url, tmp_path):
    barrier = tmp_path / "go"
    procs = [_spawn(apdb_url, 7, det, "store", barrier) for det in (1, 2)]
    time.sleep(1.0)  # let both import and build their frames
    barrier.touch()
    outs = [_finish(p) for p in procs]
    assert all("stored" in o for o in outs), outs
    with Apdb.from_url(apdb_url) as db:
        counts = db.row_counts()
        assert db.contains_visit_detector(7, 1) and db.contains_visit_detector(7, 2)
        sources = db.get_dia_sources(LATER)
    assert counts["DiaSource"] == 2 * N
    assert counts["DiaForcedSource"] == 2 * N
    assert counts["DiaObject(latest)"] == 2 * N
    assert sources["diaSourceId"].is_unique
    assert sources.groupby("detector").size().to_dict() == {1: N, 2: N}


def test_same_visit_detector_from_two_processes_is_stored_once(apdb_url, tmp_path):
    barrier = tmp_path / "go"
    procs = [_spawn(apdb_url, 8, 3, "store", barrier) for _ in range(2)]
    time.sleep(1.0)
    barrier.touch()
    outs = [_finish(p) for p in procs]
    last_lines = sorted(o.strip().splitlines()[-1].split(":")[0] for o in outs)
    assert last_lines == ["refused", "stored"], outs
    with Apdb.from_url(apdb_url) as db:
        counts = db.row_counts()
    assert counts["DiaSource"] == N
    assert counts["DiaObject"] == N


def test_sigkill_in_the_middle_of_store_leaves_no_partial_visit(apdb_url):
    proc = _spawn(apdb_url, 9, 4, "hang")
    # The worker says "starting" before store() and "inside-transaction" once
    # it is paused inside the transaction; an early exit ends the output.
    lines = []
    while (line := proc.stdout.readline()) and line.strip() != "inside-transaction":
        lines.append(line.strip())
    if line.strip() != "inside-transaction":
        proc.kill()
        raise AssertionError(f"worker never paused inside store: {lines} {proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Apdb.from_url(apdb_url) as db:
        # The server noticed the dead client and rolled back: nothing is
        # visible, and no lock is left behind, so the visit can be stored.
        counts = db.row_counts()
        assert counts["DiaSource"] == 0 and counts["ApdbVisitDetector"] == 0
        assert counts["DiaObject"] == 0 and counts["DiaForcedSource"] == 0
        assert not db.contains_visit_detector(9, 4)
        db.store(*store_worker.frames(9, 4, N))
        assert db.row_counts()["DiaSource"] == N
        assert db.contains_visit_detector(9, 4)


def test_sigkill_at_an_arbitrary_moment_is_all_or_nothing(apdb_url, tmp_path):
    barrier = tmp_path / "go"
    barrier.touch()
    proc = _spawn(apdb_url, 10, 5, "store", barrier)
    # Kill the worker shortly after it entered store(): validation, the
    # transaction or the commit, whichever it is in by then.
    assert proc.stdout.readline().strip() == "starting"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Apdb.from_url(apdb_url) as db:
        counts = db.row_counts()
        stored = db.contains_visit_detector(10, 5)
    expected = N if stored else 0
    assert counts["DiaSource"] == expected
    assert counts["DiaForcedSource"] == expected
    assert counts["DiaObject"] == expected
