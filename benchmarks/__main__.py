"""``python -m benchmarks [NAME ...] [--out PATH] [--no-plots]``, from the project root.

Runs ``benchmarks/bench_*.py`` (or only the named ones, e.g. ``limiter pool``), each in its own
process, and writes ``docs/benchmarks.md`` with plots. ``make bench`` runs all of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.report import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="only these (e.g. plans pool); default: all")
    parser.add_argument("--out", default="docs/benchmarks.md", help="report path")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args()
    return run(args.names or None, Path(args.out), plots=not args.no_plots)


if __name__ == "__main__":
    sys.exit(main())
