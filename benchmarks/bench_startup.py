"""Start-up: import and --help wall time, each in a fresh interpreter (goal: 0.5 s and 1 s).

``import rat_langchain`` and ``rat-langchain --help``, beside what a LangChain user pays anyway
(``import langchain_openai``) and the first use of the pool (``from rat_langchain import
ClientPool``, which loads langchain_openai).

    .venv/bin/python benchmarks/bench_startup.py [--runs 15]

Before the lazy API (commit ec590ce), on this machine: ``import rat_langchain`` 2.3-2.9 s,
``--help`` 2.3-2.6 s (7 and 5 runs with /usr/bin/time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("rat-langchain"))
CASES = [
    ("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"]),
    ("import rat_langchain", [sys.executable, "-c", "import rat_langchain"]),
    ("rat-langchain --help", [CLI, "--help"]),
    (
        "from rat_langchain import ClientPool (first use)",
        [sys.executable, "-c", "from rat_langchain import ClientPool"],
    ),
    (
        "import langchain_openai (LangChain's own)",
        [sys.executable, "-c", "import langchain_openai"],
    ),
]


def measure(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for _, command in CASES:  # warm the page cache and .pyc files once
        subprocess.run(command, check=True, capture_output=True)
    rows = []
    # rounds interleave the cases, so a busy moment of the machine spreads over all of them
    samples: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _ in range(args.runs):
        for name, command in CASES:
            samples[name] += measure(command, 1)
    for name, _ in CASES:
        values = samples[name]
        rows.append(
            f"| {name} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | "
            f"{max(values) * 1000:.0f} |"
        )
    print(f"Start-up wall time, {args.runs} fresh interpreters each (ms)\n")
    print("| command | median ms | min ms | max ms |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
