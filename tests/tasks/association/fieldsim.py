"""A multi-visit association simulator with known truth (independent of `tasks.simulate`).

`make_field` draws true objects uniformly over a small square field (or as
close pairs); `run_visits` detects each object in each visit with a fixed
probability, scatters its position by Gaussian noise of known sigma per axis
(the source's ``raErr``/``decErr`` say so), adds noise-only detections at
random positions, associates every visit with the DiaObjects of the visits
before (`AssociationTask`), seeds new DiaObjects from the unassociated
sources and recomputes the DiaObjects from the whole history
(`compute_dia_object_stats`), as the pipeline does.  `score` compares the
result with the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.association import AssociationConfig, AssociationTask
from tasks.association.diaobject_stats import assign_new_dia_objects, compute_dia_object_stats

ARCSEC = 1.0 / 3600.0
NOISE_TRUTH = -1


@dataclass
class Field:
    """True objects: positions (degrees) and ids."""

    ra: np.ndarray
    dec: np.ndarray
    ra0: float
    dec0: float
    side: float

    @property
    def n(self) -> int:
        return len(self.ra)


def make_field(
    n_objects: int,
    density_per_deg2: float,
    *,
    seed: int = 0,
    pairs: tuple[float, float] | None = None,
    ra0: float = 52.0,
    dec0: float = -28.0,
) -> Field:
    """Objects uniform in a square of the given density, or as close pairs.

    Parameters
    ----------
    n_objects : `int`
        Number of objects.
    density_per_deg2 : `float`
        Objects per square degree (sets the side of the square).
    seed : `int`
        Random seed.
    pairs : (`float`, `float`), optional
        Draw ``n_objects // 2`` pair centres and put two objects around each
        at a separation uniform in this range (arcsec), random orientation.
    """
    rng = np.random.default_rng(seed)
    side = np.sqrt(n_objects / density_per_deg2)
    cosd = np.cos(np.radians(dec0))
    if pairs is None:
        x = rng.uniform(0, side, n_objects)
        y = rng.uniform(0, side, n_objects)
    else:
        m = n_objects // 2
        cx, cy = rng.uniform(0, side, m), rng.uniform(0, side, m)
        sep = rng.uniform(*pairs, m) * ARCSEC
        angle = rng.uniform(0, 2 * np.pi, m)
        hx, hy = 0.5 * sep * np.cos(angle), 0.5 * sep * np.sin(angle)
        x = np.concatenate([cx - hx, cx + hx])
        y = np.concatenate([cy - hy, cy + hy])
    return Field(ra0 + x / cosd, dec0 + y, ra0, dec0, side)


@dataclass
class Outcome:
    """Every stored DiaSource with its truth, and the final DiaObjects."""

    sources: pd.DataFrame  # diaSourceId, truth, diaObjectId, matched (bool), visit
    objects: pd.DataFrame


def run_visits(
    field: Field,
    noise_arcsec: float,
    *,
    n_visits: int = 12,
    detection_probability: float = 0.8,
    noise_fraction: float = 0.01,
    seed: int = 1,
    config: AssociationConfig | None = None,
) -> Outcome:
    """Detect, associate and update the DiaObjects over ``n_visits`` visits."""
    rng = np.random.default_rng(seed)
    task = AssociationTask(config=config) if config is not None else AssociationTask()
    cosd = np.cos(np.radians(field.dec0))
    objects = pd.DataFrame({"diaObjectId": pd.Series([], dtype=np.int64), "ra": [], "dec": []})
    history = []
    next_id = 1
    for visit in range(n_visits):
        seen = np.flatnonzero(rng.random(field.n) < detection_probability)
        n_noise = rng.poisson(noise_fraction * len(seen))
        dec_noise = field.dec0 + rng.uniform(0, field.side, n_noise)
        dec_true = np.concatenate([field.dec[seen], dec_noise])
        ra_true = np.concatenate(
            [field.ra[seen], field.ra0 + rng.uniform(0, field.side, n_noise) / cosd]
        )
        n = len(ra_true)
        cos_s = np.cos(np.radians(dec_true))
        sources = pd.DataFrame(
            {
                "diaSourceId": np.arange(next_id, next_id + n, dtype=np.int64),
                "ra": ra_true + rng.normal(0, noise_arcsec, n) * ARCSEC / cos_s,
                "dec": dec_true + rng.normal(0, noise_arcsec, n) * ARCSEC,
                "raErr": noise_arcsec * ARCSEC / cos_s,
                "decErr": np.full(n, noise_arcsec * ARCSEC),
                "ra_dec_Cov": np.zeros(n),
                "band": "r",
                "midpointMjdTai": 60000.0 + visit,
                "psfFlux": 1000.0,
                "psfFluxErr": 50.0,
            }
        )
        next_id += n
        truth = np.concatenate([seen, np.full(n_noise, NOISE_TRUTH)])
        result = task.run(sources, objects)
        matched = result.matchedDiaSources.assign(matched=True)
        new = assign_new_dia_objects(result.unAssocDiaSources).assign(matched=False)
        stored = pd.concat([matched, new], ignore_index=True)
        stored["truth"] = pd.Series(truth, index=sources.diaSourceId).loc[stored.diaSourceId].values
        stored["visit"] = visit
        history.append(stored)
        everything = pd.concat(history, ignore_index=True)
        objects = compute_dia_object_stats(everything)
    return Outcome(pd.concat(history, ignore_index=True), objects)


def score(outcome: Outcome, pair_of: np.ndarray | None = None) -> dict[str, float]:
    """Duplicates, purity and completeness of an outcome against the truth.

    - Each DiaObject's truth is the majority truth of its sources.
    - ``duplicated``: DiaObjects beyond the first per true object, over the
      true objects detected at least once.
    - ``purity``: of the sources matched to an existing DiaObject, the
      fraction whose truth is that object's (a noise source never is).
    - ``completeness``: of the detections of real objects after their first
      one, the fraction matched to a DiaObject of their own truth.
    - ``noise_new``: fraction of noise-only detections that started a new object.
    """
    src = outcome.sources
    truth = src.truth.to_numpy()
    obj = src.diaObjectId.to_numpy(np.int64)
    real = truth != NOISE_TRUTH
    # majority truth per DiaObject
    counts = src[real].groupby(["diaObjectId", "truth"]).size().reset_index(name="n")
    counts = counts.sort_values(["diaObjectId", "n"], ascending=[True, False])
    majority = counts.drop_duplicates("diaObjectId").set_index("diaObjectId").truth
    obj_truth = majority.reindex(obj).fillna(NOISE_TRUTH).to_numpy(np.int64)
    matched = src.matched.to_numpy(bool)
    correct = (obj_truth == truth) & real
    first = ~src[real].duplicated("truth", keep="first").reindex(src.index, fill_value=False)
    later = real & ~first.to_numpy(bool)
    n_true = len(np.unique(truth[real]))
    n_real_objects = int(majority.index.size)
    out = {
        "n_true_objects": n_true,
        "n_dia_objects": int(len(np.unique(obj))),
        "duplicated": (n_real_objects - n_true) / n_true,
        "purity": float(correct[matched].mean()),
        "completeness": float((correct & matched)[later].mean()),
        "noise_new": float((~matched[~real]).mean()) if (~real).any() else float("nan"),
    }
    return out
