"""``apdb-pipeline simulate ROOT`` / ``python -m tasks.simulate ROOT``: write a simulated survey."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from apdb.config import validation_reasons
from tasks.simulate.config import SimulationConfig
from tasks.simulate.survey import simulate_survey

__all__ = ["configure_parser", "main", "config_from_args"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's arguments to ``parser``."""
    parser.add_argument("root", type=Path, help="Data directory to write (created if missing).")
    parser.add_argument(
        "--preset",
        choices=["default", "tiny", "benchmark"],
        default="default",
        help="Starting configuration: the small default survey, a tiny one for tests, or one "
        "4k x 4k detector with 10,000 sources.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of SimulationConfig fields.")
    parser.add_argument("--seed", type=int, help="Random seed.")
    parser.add_argument("--visits", type=int, help="Number of visits.")
    parser.add_argument("--detectors", type=int, help="Number of detectors.")
    parser.add_argument(
        "--detector-size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), help="Pixels."
    )
    parser.add_argument("--bands", help="Bands to cycle through, e.g. 'gri'.")
    parser.add_argument("--static", type=int, help="Number of static stars.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Write into a non-empty directory."
    )


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """Build the configuration from the preset, the YAML file and the options."""
    fields: dict = {}
    if args.config is not None:
        fields.update(yaml.safe_load(args.config.read_text()) or {})
    for name, value in (
        ("seed", args.seed),
        ("n_visits", args.visits),
        ("n_detectors", args.detectors),
        ("detector_size", tuple(args.detector_size) if args.detector_size else None),
        ("bands", list(args.bands) if args.bands else None),
        ("n_static", args.static),
    ):
        if value is not None:
            fields[name] = value
    if args.preset == "tiny":
        return SimulationConfig.tiny(**fields)
    if args.preset == "benchmark":
        return SimulationConfig.benchmark(**fields)
    return SimulationConfig(**fields)


def main(args: argparse.Namespace) -> int:
    """Run the simulator; return the exit status."""
    try:
        config = config_from_args(args)
    except (ValidationError, OSError, yaml.YAMLError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            reason = validation_reasons(exc)
        else:
            reason = " ".join(str(exc).split())
        print(f"simulate: invalid configuration: {reason}", file=sys.stderr)
        return 2
    root: Path = args.root
    if root.exists() and any(root.iterdir()) and not args.overwrite:
        print(f"simulate: {root} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    truth = simulate_survey(config, root)
    elapsed = time.perf_counter() - start
    counts = truth.objects["kind"].value_counts().to_dict()
    print(
        f"wrote {len(truth.visits)} visits x {config.n_detectors} detectors to {root} "
        f"in {elapsed:.1f} s; objects: {counts}; "
        f"isolated stars: {len(truth.isolated_star_ids)}"
    )
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.simulate", description=__doc__)
    configure_parser(parser)
    return main(parser.parse_args(argv))
