"""One quota across processes: 4 workers, one API key, a simulator enforcing 1200 RPM.

Each worker is its own process with its own ClientPool, calling the chat model as fast as its
limiter allows. (a) every worker's limiter backed by one Redis (``rate_limiting.backend:
redis``), (b) local limiters, as each process has without sharing. The simulator enforces the
limit over 1 s windows (20 requests per second, bursts of 20) and counts 429s.

    .venv/bin/python benchmarks/bench_shared_limiter.py [--seconds 10] [--workers 4]
"""

from __future__ import annotations

import argparse

from benchmarks import _quota_run
from rat_langchain.sim import SimulatorProcess
from tests.support.redis_server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=1200)
    args = parser.parse_args()
    print(
        f"{args.workers} worker processes, {args.seconds:.0f} s each, simulator at "
        f"{args.rpm} RPM (1 s windows); client safety_margin 0.9, burst_s 1\n"
    )
    print("| limiters | ok | 429s | 429 share | wall s | ok / what the server admits |")
    print("|---|---:|---:|---:|---:|---:|")
    with RedisServer() as redis, SimulatorProcess(rpm=args.rpm, limit_window_s=1.0) as sim:
        for backend in ("redis", "local"):
            run = _quota_run.run(
                sim,
                backend=backend,
                redis_url=redis.url,
                workers=args.workers,
                seconds=args.seconds,
                rpm=args.rpm,
            )
            label = "one Redis-backed limiter" if backend == "redis" else "local limiters"
            print(
                f"| {label} | {run.ok} | {run.throttled} | {run.throttled_share:.1%} "
                f"| {run.wall_s:.1f} | {run.share_of_limit:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
