"""Simulated objects: static and variable stars, transients, Solar System objects.

Every object has a spectral slope ``sedSlope`` (flux density ∝ λ**slope, so
positive is red) that sets its flux in each band (relative to r) and its
differential chromatic refraction.  Light curves:

- ``static``: constant flux.
- ``variable``: ``mean * (1 + amplitude * sin(2π (t - tRef) / period + phase))``.
- ``transient``: 0 before ``tStart``, then ``peak * exp(-(t - tStart) / tau)``.
- ``sso``: constant flux, moving on a great circle from ``(ra, dec)`` at
  ``tRef`` with speed ``rate`` (deg/day) along position angle ``motionPa``;
  ``raRate`` (including cos dec) and ``decRate`` are its components at ``tRef``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.images.filters import BANDS, get_band
from tasks.images.wcs_utils import offset_sky

__all__ = [
    "KINDS",
    "AB_ZERO_NJY_MAG",
    "mag_to_njy",
    "make_objects",
    "mean_fluxes",
    "object_fluxes",
    "object_positions",
    "SSO_ID_OFFSET",
]

KINDS = ("static", "variable", "transient", "sso")
AB_ZERO_NJY_MAG = 31.4
SSO_ID_OFFSET = 1_000_000


def mag_to_njy(mag: np.ndarray) -> np.ndarray:
    """AB magnitude to nJy."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - AB_ZERO_NJY_MAG))


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Magnitudes with dN/dm ∝ 10**(0.3 m) on [lo, hi] (more faint stars, as on the sky)."""
    a, b = 10 ** (0.3 * lo), 10 ** (0.3 * hi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / 0.3


def make_objects(
    rng: np.random.Generator,
    config,
    sample_positions,
    visit_times: np.ndarray,
) -> pd.DataFrame:
    """Draw the objects of the survey.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Source of randomness.
    config : `tasks.simulate.SimulationConfig`
        Numbers of objects, magnitude and rate ranges.
    sample_positions : callable
        ``sample_positions(n) -> (ra, dec)``: uniform positions over the survey footprint.
    visit_times : `numpy.ndarray`
        TAI MJD of the visits (transient start times and SSO epochs are drawn from them).

    Returns
    -------
    objects : `pandas.DataFrame`
        One row per object (see the module docstring for the columns).
    """
    counts = {
        "static": config.n_static,
        "variable": config.n_variable,
        "transient": config.n_transient,
        "sso": config.n_sso,
    }
    n = sum(counts.values())
    kind = np.concatenate([np.full(counts[k], k, dtype=object) for k in KINDS])
    ra, dec = sample_positions(n)
    mag = np.empty(n)
    sl = {}
    start = 0
    for k in KINDS:
        sl[k] = slice(start, start + counts[k])
        start += counts[k]
    static_mags = _power_law_mags(rng, counts["static"], *config.mag_range)
    n_bright = min(config.n_bright, counts["static"])
    static_mags[:n_bright] = rng.uniform(13.5, 15.0, n_bright)  # saturate in a visit
    mag[sl["static"]] = static_mags
    mag[sl["variable"]] = rng.uniform(17.0, 22.0, counts["variable"])
    mag[sl["transient"]] = rng.uniform(19.0, 22.5, counts["transient"])
    mag[sl["sso"]] = rng.uniform(19.0, 22.5, counts["sso"])
    nan = np.full(n, np.nan)
    objects = pd.DataFrame(
        {
            "objectId": np.arange(1, n + 1, dtype=np.int64),
            "kind": kind.astype(str),
            "ssObjectId": np.zeros(n, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "sedSlope": rng.uniform(*config.sed_slope_range, n),
            "mag_r": mag,
            "period": nan.copy(),
            "amplitude": nan.copy(),
            "phase": nan.copy(),
            "tRef": nan.copy(),
            "tStart": nan.copy(),
            "tau": nan.copy(),
            "rate": nan.copy(),
            "motionPa": nan.copy(),
            "raRate": nan.copy(),
            "decRate": nan.copy(),
        }
    )
    t0 = float(np.min(visit_times)) if len(visit_times) else 0.0
    t1 = float(np.max(visit_times)) if len(visit_times) else 0.0
    v = sl["variable"]
    nv = counts["variable"]
    objects.loc[objects.index[v], "period"] = 10 ** rng.uniform(-1.0, 1.0, nv)
    objects.loc[objects.index[v], "amplitude"] = rng.uniform(0.1, 0.5, nv)
    objects.loc[objects.index[v], "phase"] = rng.uniform(0, 2 * np.pi, nv)
    objects.loc[objects.index[v], "tRef"] = t0
    tr = sl["transient"]
    nt = counts["transient"]
    objects.loc[objects.index[tr], "tStart"] = rng.uniform(t0 - 1.0, t1, nt)
    objects.loc[objects.index[tr], "tau"] = 10 ** rng.uniform(0.0, 1.3, nt)
    s = sl["sso"]
    ns = counts["sso"]
    if ns:
        rate = rng.uniform(*config.sso_rate_range, ns)
        pa = rng.uniform(0.0, 360.0, ns)
        objects.loc[objects.index[s], "ssObjectId"] = SSO_ID_OFFSET + np.arange(ns)
        objects.loc[objects.index[s], "tRef"] = rng.choice(np.asarray(visit_times), ns)
        objects.loc[objects.index[s], "rate"] = rate
        objects.loc[objects.index[s], "motionPa"] = pa
        objects.loc[objects.index[s], "raRate"] = rate * np.sin(np.radians(pa))
        objects.loc[objects.index[s], "decRate"] = rate * np.cos(np.radians(pa))
    ref = get_band("r").effective_wavelength
    for band in BANDS:
        ratio = get_band(band).effective_wavelength / ref
        objects[f"flux_{band}"] = mag_to_njy(mag) * ratio ** objects["sedSlope"].to_numpy()
    return objects


def object_fluxes(objects: pd.DataFrame, band: str, mjd: float) -> np.ndarray:
    """Return the true flux (nJy) of every object in ``band`` at TAI MJD ``mjd``."""
    base = objects[f"flux_{band}"].to_numpy()
    kind = objects["kind"].to_numpy()
    flux = base.copy()
    var = kind == "variable"
    if var.any():
        o = objects[var]
        arg = (
            2 * np.pi * (mjd - o["tRef"].to_numpy()) / o["period"].to_numpy()
            + o["phase"].to_numpy()
        )
        flux[var] = base[var] * (1.0 + o["amplitude"].to_numpy() * np.sin(arg))
    tra = kind == "transient"
    if tra.any():
        o = objects[tra]
        dt = mjd - o["tStart"].to_numpy()
        decay = np.exp(-np.clip(dt, 0, None) / o["tau"].to_numpy())
        flux[tra] = np.where(dt >= 0, base[tra] * decay, 0.0)
    return flux


def mean_fluxes(objects: pd.DataFrame, band: str) -> np.ndarray:
    """Return the static-sky flux (nJy) in ``band``: static and variable stars at their mean."""
    kind = objects["kind"].to_numpy()
    keep = (kind == "static") | (kind == "variable")
    return np.where(keep, objects[f"flux_{band}"].to_numpy(), 0.0)


def object_positions(objects: pd.DataFrame, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the true ICRS (ra, dec) of every object at TAI MJD ``mjd`` (SSOs move)."""
    ra = objects["ra"].to_numpy().copy()
    dec = objects["dec"].to_numpy().copy()
    sso = objects["kind"].to_numpy() == "sso"
    if sso.any():
        o = objects[sso]
        dist = o["rate"].to_numpy() * (mjd - o["tRef"].to_numpy()) * 3600.0
        ra[sso], dec[sso] = offset_sky(ra[sso], dec[sso], o["motionPa"].to_numpy(), dist)
    return ra, dec
