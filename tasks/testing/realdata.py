"""Real survey data for tests, from pinned source distributions on the package registry.

Real ZTF data reaches this project only as test data inside published
packages.  `fetch` downloads a pinned sdist with ``pip download --no-deps``
into a cache directory outside the repository (``$APDB_TEST_DATA``, default
``~/.cache/apdb-pipeline/testdata``) and `member` extracts a file or folder
from it.  Nothing is committed.  ``python -m tasks.testing.realdata`` fetches
every package in `PACKAGES` (what ``.ci/run`` does before the tests).

In tests, `require` returns the extracted path, or skips when the download
fails and ``CI`` is unset (offline development); with ``CI`` set it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

__all__ = ["PACKAGES", "RealDataError", "cache_dir", "fetch", "member", "require"]

PACKAGES: dict[str, str] = {
    "fink-science": "7.4.0",  # Apache-2.0: real ZTF alerts with histories
    "ztforce": "0.4.0",  # MIT: ZTF cutouts with PSFEx models and IPAC PSF-catalog fluxes
    "ztfimg": "0.19.0",  # Apache-2.0: one ZTF CCD quadrant with its mask
}
"""Pinned packages holding the test data."""


class RealDataError(RuntimeError):
    """A pinned package could not be downloaded or lacks the requested member."""


def cache_dir() -> Path:
    """``$APDB_TEST_DATA`` or ``~/.cache/apdb-pipeline/testdata`` (created)."""
    path = Path(os.environ.get("APDB_TEST_DATA") or Path.home() / ".cache/apdb-pipeline/testdata")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _find_sdist(name: str, version: str) -> Path | None:
    stems = {f"{name}-{version}", f"{name.replace('-', '_')}-{version}"}
    for stem in stems:
        path = cache_dir() / f"{stem}.tar.gz"
        if path.exists():
            return path
    return None


def fetch(name: str, version: str | None = None) -> Path:
    """Download the sdist of ``name==version`` into the cache (once); return its path."""
    version = version or PACKAGES[name]
    found = _find_sdist(name, version)
    if found is not None:
        return found
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(cache_dir()),
        f"{name}=={version}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealDataError(f"pip download {name}=={version} failed: {exc}") from None
    found = _find_sdist(name, version)
    if done.returncode != 0 or found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RealDataError(f"pip download {name}=={version} failed: {tail[0]}")
    return found


def member(name: str, path: str, version: str | None = None) -> Path:
    """Extract ``path`` (a file or folder inside the sdist's top folder) once; return it.

    Parameters
    ----------
    name : `str`
        Package name (a key of `PACKAGES` unless ``version`` is given).
    path : `str`
        Path below the sdist's top-level folder, e.g.
        ``"fink_science/data/alerts/20240606_iband_history.parquet"``.
    """
    version = version or PACKAGES[name]
    target_root = cache_dir() / f"{name}-{version}"
    target = target_root / path
    if target.exists():
        return target
    sdist = fetch(name, version)
    with tarfile.open(sdist, "r:gz") as tar:
        wanted = []
        for info in tar.getmembers():
            parts = info.name.split("/", 1)
            inside = len(parts) == 2 and (
                parts[1] == path or parts[1].startswith(path.rstrip("/") + "/")
            )
            if inside and info.isfile():
                wanted.append((info, parts[1]))
        if not wanted:
            raise RealDataError(f"{sdist.name} has no member {path}")
        for info, rel in wanted:
            dest = target_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            if source is None:
                continue
            tmp = dest.with_name(dest.name + ".part")
            tmp.write_bytes(source.read())
            tmp.replace(dest)
    return target


def require(name: str, path: str) -> Path:
    """`member` for tests: skip when offline outside CI, fail in CI."""
    import pytest

    try:
        return member(name, path)
    except RealDataError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"real test data unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"real test data unavailable (offline?): {exc}")
        raise  # unreachable: pytest.skip raises


def main() -> int:
    """Fetch every pinned package; print where they are."""
    for name, version in PACKAGES.items():
        try:
            print(fetch(name, version))
        except RealDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
