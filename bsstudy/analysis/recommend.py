"""`python -m bsstudy.analysis.recommend <sweep>`: which batch size (and lr) to use, from a tuned study's folder
(experiment=tuned). Prints the recommendation of bsstudy/analysis/report/tuned.py: the largest batch size before
diminishing returns (B_crit of S(B) = S_min (1 + B_crit / B), with its bootstrap interval), the batch size with
the least training time to the target on the machine that ran the study, and the lr to use with it; each with
the data it rests on, or "cannot tell", why, and the next step (the overrides that would decide it). Exit
code 1 when the folder holds no tuned study, 2 when it is no folder (one line each, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from bsstudy import UsageError
from bsstudy.analysis.report.tuned import analyse, recommendation_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsstudy.analysis.recommend", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the folder of an experiment=tuned sweep (its hydra.sweep.dir)")
    args = parser.parse_args(argv)
    try:
        study = analyse(args.sweep)
    except UsageError as err:  # no such folder
        sys.stderr.write(f"error: {err}\n")
        return 2
    if study is None:
        sys.stderr.write(f"error: {args.sweep} holds no run with a validation target (run experiment=tuned)\n")
        return 1
    print("\n".join(recommendation_lines(study)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
