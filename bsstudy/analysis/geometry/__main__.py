"""`python -m bsstudy.analysis.geometry <measure> <run or sweep> [...] [key=value ...]`: geometry of finished runs.

  interpolate RUN_A RUN_B            alpha = 0 at RUN_A, 1 at RUN_B -> <common parent>/geometry/interpolation_<Ba>_<Bb>/
  interpolate SWEEP [--batch-sizes BA BB]   default: the smallest and largest batch size of the sweep
  sharpness | landscape | hessian RUN_OR_SWEEP   -> <run>/probes/<measure>/ and summary.json probes.<measure>

`key=value` arguments override the measure's settings in bsstudy/conf/probes/<measure>.yaml (e.g. train_samples=2048);
`--geometry-bn running|batch` replaces the runs' model.geometry_bn (how batch norm is evaluated).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from bsstudy.analysis.geometry.offline import MEASURES, interpolate_runs, interpolate_sweep, measure_all
from bsstudy.config import GEOMETRY_BN


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bsstudy.analysis.geometry", description=__doc__.split("\n")[0])
    parser.add_argument("measure", choices=MEASURES)
    parser.add_argument("args", nargs="+", metavar="PATH|key=value", help="run or sweep folders, then overrides")
    parser.add_argument(
        "--batch-sizes", type=int, nargs=2, metavar=("BA", "BB"), help="interpolate: the pair of a sweep"
    )
    parser.add_argument("--out", type=Path, help="interpolate: output folder")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--geometry-bn", choices=GEOMETRY_BN, help="batch norm: running or batch statistics (default: the run's)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(a) for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if missing := [str(p) for p in paths if not p.is_dir()]:
        parser.error(f"not a folder: {', '.join(missing)} (give run or sweep folders)")
    if args.measure == "interpolate" and len(paths) not in (1, 2):
        parser.error("interpolate takes two run folders or one sweep folder")
    if args.measure != "interpolate" and len(paths) != 1:
        parser.error(f"{args.measure} takes one run or sweep folder")
    try:
        if args.measure != "interpolate":
            measure_all(args.measure, paths[0], overrides, args.device, args.geometry_bn)
        elif len(paths) == 2:
            interpolate_runs(paths[0], paths[1], args.out, overrides, args.device, args.geometry_bn)
        else:
            interpolate_sweep(paths[0], args.batch_sizes, overrides, args.device, args.geometry_bn)
    except FileNotFoundError as err:  # no runs, no checkpoint: say so without a traceback
        parser.error(str(err))


if __name__ == "__main__":
    main()
