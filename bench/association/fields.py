"""Association quality on crowded multi-visit fields: error-scaled radius vs the fixed 1" radius.

Runs the known-truth field simulator of the tests (`tests.tasks.association.fieldsim`)
for three cases (0.3" noise isolated, 0.1" noise isolated, 0.1" noise on close
pairs 0.3-1.0" apart), each with several seeds, twice in the same run: with the
default configuration (radius = 5 sigma of the pair's combined error, floor
0.5", cap 2") and with the reference fixed 1" radius (floor = cap = 1").
Prints duplicated DiaObjects, purity, completeness and the fraction of
noise-only detections that started a new object, and the ratio of duplicates.

Run: ``python -m bench.association [--objects 48000] [--density 89000] [--seeds 1 2 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tasks.association import AssociationConfig
from tests.tasks.association.fieldsim import make_field, run_visits, score

CASES = {
    "0.3in isolated": (0.3, None),
    "0.1in isolated": (0.1, None),
    "0.1in pairs 0.3-1.0in": (0.1, (0.3, 1.0)),
}
CONFIGS = {
    "error-scaled": AssociationConfig(),
    "fixed 1in": AssociationConfig(maxDistArcSeconds=1.0, min_radius_arcsec=1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=48_000)
    parser.add_argument("--density", type=float, default=89_000.0, help="objects per deg^2")
    parser.add_argument("--visits", type=int, default=12)
    parser.add_argument("--probability", type=float, default=0.8, help="detection probability")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    print(
        f"{args.objects} objects at {args.density:.0f}/deg^2, {args.visits} visits, "
        f"detection probability {args.probability}, seeds {args.seeds}"
    )
    print(
        f"{'case':24s} {'config':13s} {'duplicated':>10s} {'purity':>8s} "
        f"{'complete':>8s} {'noise new':>9s} {'time':>6s}"
    )
    for case, (noise, pairs) in CASES.items():
        means = {}
        for name, config in CONFIGS.items():
            rows, start = [], time.perf_counter()
            for seed in args.seeds:
                field = make_field(args.objects, args.density, seed=seed, pairs=pairs)
                outcome = run_visits(
                    field,
                    noise,
                    n_visits=args.visits,
                    detection_probability=args.probability,
                    seed=seed + 100,
                    config=config,
                )
                rows.append(score(outcome))
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            means[name] = mean
            print(
                f"{case:24s} {name:13s} {100 * mean['duplicated']:9.3f}% "
                f"{100 * mean['purity']:7.3f}% {100 * mean['completeness']:7.3f}% "
                f"{100 * mean['noise_new']:8.2f}% {time.perf_counter() - start:5.0f}s"
            )
        ref, new = means["fixed 1in"], means["error-scaled"]
        ratio = new["duplicated"] / ref["duplicated"] if ref["duplicated"] else float("nan")
        print(f"{case:24s} duplicates error-scaled / fixed: {ratio:.3f}")


if __name__ == "__main__":
    main()
