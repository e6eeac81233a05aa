"""Transients 2-6 px from bright stars: recovery with and without the neighbour rescue.

Runs the known-truth generator of the tests (`tests.tasks.diffim.nearstar`: 1024² pairs, ~920
stars with random registration shifts, 120 transients next to stars of S/N 300-2,000 and 50
isolated ones per image) for several seeds, with ``doNeighbourRescue`` on (the default) and off
in the same run, and prints recovery per expected-S/N bin, versus distance from the star and
versus the star's S/N, and the spurious detections per image.

Run: ``python bench/diffim/near_stars.py [--seeds 1 2 3] [--shift 0.05]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from tests.tasks.diffim.nearstar import rescue_outcomes


def _fraction(found: pd.Series) -> str:
    return f"{100 * found.mean():5.1f} % ({int(found.sum())}/{len(found)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shift", type=float, default=0.05, help="registration sigma, px")
    args = parser.parse_args()
    # rescue on first, as printed before
    results = dict(reversed(list(rescue_outcomes(args.seeds, args.shift).items())))
    for rescue, (table, spurious) in results.items():
        print(f"neighbour rescue {'on' if rescue else 'off'}: spurious per image {spurious:.2f}")
        near = table.distance.notna()
        for name, sel in (("next to stars", near), ("isolated", ~near)):
            for lo, hi in ((7, 10), (10, 20), (20, np.inf)):
                rows = table[sel & (table.snr >= lo) & (table.snr < hi)]
                print(f"  {name:13s} {lo:>4.0f}-{hi:<4.0f} sigma: {_fraction(rows.found)}")
        strong = table[near & (table.snr >= 10)]
        for lo, hi in ((2, 3), (3, 4), (4, 5), (5, 6)):
            rows = strong[(strong.distance >= lo) & (strong.distance < hi)]
            print(f"  >= 10 sigma, {lo}-{hi} px from the star: {_fraction(rows.found)}")
        for lo, hi in ((300, 550), (550, 1000), (1000, 2000)):
            rows = strong[(strong.host_snr >= lo) & (strong.host_snr < hi)]
            print(f"  >= 10 sigma, star S/N {lo}-{hi}: {_fraction(rows.found)}")
    on, off = results[True][1], results[False][1]
    print(f"spurious ratio on / off: {on / off:.3f}" if off else "no spurious without rescue")


if __name__ == "__main__":
    main()
