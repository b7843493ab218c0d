"""`python -m bsstudy.analysis.report <sweep or run folder> [--target-acc A] [--out DIR | --publish DIR]`:
write the report.

Exit codes: 0 when the report was written; 2 for a folder that is missing or holds no runs (and a bad
argument); 1 when the report cannot be written (a full disk, a read-only folder: the previous report is left
as it was). Each error is one line, without a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bsstudy import OutputError, UsageError
from bsstudy.analysis.report.build import build_report
from bsstudy.analysis.report.publish import publish


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bsstudy.analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path, help="a multirun folder (multirun/<date>/<time>) or one run folder")
    parser.add_argument(
        "--target-acc",
        type=float,
        default=None,
        help="validation accuracy for time-to-accuracy (default: 98%% of the sweep's best; without a "
        "validation split there is no default and the target is read on test accuracy)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None, help="output folder (default: <sweep>/report)")
    where.add_argument(
        "--publish",
        type=Path,
        default=None,
        metavar="DIR",
        help="publish into DIR (e.g. docs/results/<study>): report.md, figures, tables as CSV and a README.md "
        "with the command, versions, machine and duration; no report.html, no run folders",
    )
    args = parser.parse_args(argv)
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        parser.error(f"--target-acc must be an accuracy in (0, 1]; got {args.target_acc}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.publish is not None:
            print(f"published: {publish(args.sweep, args.publish, args.target_acc) / 'README.md'}")
            return
        out = build_report(args.sweep, args.target_acc, args.out)
    except UsageError as err:  # a missing or empty folder, a full disk: one line, no traceback
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(1 if isinstance(err, OutputError) else 2) from None
    print(f"report: {out / 'report.html'}\n        {out / 'report.md'}")


if __name__ == "__main__":
    main()
