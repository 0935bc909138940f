"""Serve it: a FastAPI RAG service under uvicorn, pooled against naive, on the same server.

The pooled service is examples/fastapi_rag.py (one ``ClientPool`` and one store per process;
``/ask`` an async route, ``/ask-sync`` a plain ``def`` one); the naive one makes a new
``OpenAIEmbeddings()`` and ``ChatOpenAI()`` in every request (benchmarks/_serve_app.py). Each
service runs in its own uvicorn process (one worker), the simulator in another, the load here:
each ``POST`` is one query embedding and one chat completion at the server. Three servers: a
generous one (100 ms, 5000 RPM / 5M TPM over a minute, as in issue 22), a tight one (3000 RPM
enforced per second: 50 requests a second, no burst), and one with no limit at all (100 ms),
where what bounds a route is the service itself. Loads: 50 requests 5 at a time, 200 at
once, then 1000 requests 200 at a time. Columns: requests that failed (not 200), latency
percentiles, requests answered per second, the service process's threads (before the load,
peak, one second after) and resident memory (peak), TCP connections the server saw opened and
the share of its requests that rode a warm one (reuse), the requests it saw by kind and how
many it refused (429: each retried by the client). Each service answers 20 requests before
the loads (the threads a first request starts are not a leak).

The origin's success criteria, checked per service below the table: no hang, < 1 % errors, a
thread count back where it started, > 80 % connection reuse (issue 22 asks > 95 % of the pooled
service), p95 reported.

    .venv/bin/python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rat_langchain.sim import SimulatorProcess

ROOT = Path(__file__).resolve().parents[1]
SERVERS = {
    "generous": {"latency_ms": 100, "rpm": 5000, "tpm": 5_000_000},
    "3000 RPM per second": {
        "latency_ms": 100,
        "rpm": 3000,
        "tpm": 5_000_000,
        "limit_window_s": 1.0,
    },
    # no limit at all (a gateway, a local server): what bounds a route is the service itself
    "unlimited": {"latency_ms": 100},
}
SERVICES = (
    ("pooled, async route", "pooled", "/ask"),
    ("pooled, sync route", "pooled", "/ask-sync"),
)
NAIVE = (("naive, async route", "naive", "/ask"),)
LOADS = (("50, 5 at a time", 50, 5), ("200 at once", 200, 200), ("1000, 200 at a time", 1000, 200))
HANG_S = 120.0  # a load not done in this long has hung


@dataclass
class Sample:
    threads: list[int] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)


def _status(pid: int) -> tuple[int, int]:
    """(threads, resident kB) of process ``pid``, from /proc."""
    threads = rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return threads, rss


async def _watch(pid: int, sample: Sample, done: asyncio.Event) -> None:
    while not done.is_set():
        threads, rss = _status(pid)
        sample.threads.append(threads)
        sample.rss_kb.append(rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.02)


def _start(kind: str, base_url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._serve_app", kind, base_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port:
        process.kill()
        raise RuntimeError(f"the {kind} service did not start")
    return process, f"http://127.0.0.1:{port}"


async def _ready(client: httpx.AsyncClient) -> None:
    """The service has run its lifespan (the store is built): it answers /healthz."""
    for _ in range(600):
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the service never became ready")


async def _load(
    client: httpx.AsyncClient, route: str, n: int, concurrency: int
) -> tuple[list[float], int, float, bool]:
    """(latencies of the answered, failed, wall seconds, hung)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.post(route, json={"question": f"what is pooling? {i}"})
            except httpx.HTTPError:
                failed += 1
                return
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1

    started = time.perf_counter()
    hung = False
    try:
        async with asyncio.timeout(HANG_S), asyncio.TaskGroup() as group:
            for i in range(n):
                group.create_task(one(i))
    except TimeoutError:
        hung = True
    return latencies, failed, time.perf_counter() - started, hung


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Verdict:
    hung: bool = False
    requests: int = 0
    failed: int = 0
    threads_before: int = 0
    threads_after: int = 0
    reuse: list[float] = field(default_factory=list)
    opened: int = 0  # connections the server saw opened, over every load
    sent: int = 0  # requests it answered
    p95: list[float] = field(default_factory=list)


async def _service(
    server: str, sim: SimulatorProcess, name: str, kind: str, route: str, loads: tuple
) -> Verdict:
    process, url = _start(kind, sim.base_url)
    verdict = Verdict()
    try:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(base_url=url, timeout=HANG_S, limits=limits) as client:
            await _ready(client)
            await _load(client, route, 20, 5)  # warm: the threads a first request starts
            for load, n, concurrency in loads:
                await asyncio.sleep(1.1)  # the server's window empties between loads
                before, _ = _status(process.pid)
                sim.reset_stats()
                sample, done = Sample(), asyncio.Event()
                async with asyncio.TaskGroup() as group:
                    group.create_task(_watch(process.pid, sample, done))
                    latencies, failed, took, hung = await _load(client, route, n, concurrency)
                    done.set()
                stats = sim.stats()
                await asyncio.sleep(1.0)
                after, _ = _status(process.pid)
                reuse = stats.connection_reuse
                p95 = _pct(latencies, 0.95)
                print(
                    f"| {server} | {name} | {load} | {failed} | {_pct(latencies, 0.5):.0f} | "
                    f"{p95:.0f} | {_pct(latencies, 0.99):.0f} | {len(latencies) / took:.1f} | "
                    f"{before} / {max(sample.threads, default=before)} / {after} | "
                    f"{stats.connections_opened} | {reuse:.0%} | "
                    f"{stats.count('chat')} / {stats.count('embeddings')} / "
                    f"{stats.count(status=429)} | "
                    f"{max(sample.rss_kb, default=0) / 1024:.0f} |",
                    flush=True,
                )
                verdict.hung |= hung
                verdict.requests += n
                verdict.failed += failed
                verdict.threads_before = before  # of the last load: flat after it?
                verdict.threads_after = after
                verdict.reuse.append(reuse)
                verdict.opened += stats.connections_opened
                verdict.sent += stats.total_requests
                verdict.p95.append(p95)
    finally:
        process.terminate()
        process.wait(10)
    return verdict


async def _main(quick: bool) -> None:
    loads = LOADS if not quick else tuple((a, n // 5, c) for a, n, c in LOADS)
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    print()
    print(
        "| server | service | load | failed | p50 (ms) | p95 (ms) | p99 (ms) | answered/s | "
        "threads before / peak / after | connections opened | reuse | "
        "server requests: chat / embeddings / 429 | RSS peak (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts: dict[tuple[str, str], Verdict] = {}
    for server, settings in SERVERS.items():
        with SimulatorProcess(**settings) as sim:
            for name, kind, route in SERVICES + NAIVE:
                verdicts[server, name] = await _service(server, sim, name, kind, route, loads)
    print()
    print(
        "| server | service | no hang | errors < 1 % | threads flat after the last load "
        "| reuse > 80 % (all loads) | p95 per load (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for (server, name), v in verdicts.items():
        errors = v.failed / max(1, v.requests)
        reuse = 1 - v.opened / max(1, v.sent)
        print(
            f"| {server} | {name} | {'yes' if not v.hung else 'NO'} | "
            f"{'yes' if errors < 0.01 else 'NO'} ({errors:.1%}) | "
            f"{'yes' if v.threads_after <= v.threads_before + 2 else 'NO'} "
            f"({v.threads_before} -> {v.threads_after}) | "
            f"{'yes' if reuse > 0.8 else 'NO'} ({reuse:.0%}) | "
            f"{' / '.join(f'{p:.0f}' for p in v.p95)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests")
    asyncio.run(_main(parser.parse_args().quick))


if __name__ == "__main__":
    main()
