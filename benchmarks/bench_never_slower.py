"""Never slower than the ChatOpenAI it replaces: the pool at zero configuration against plain
``ChatOpenAI`` on the same server, in the same run.

Every kind of server (announced limits, Azure-style, silent with a rate limit, silent and
unlimited, local model servers with 16 and 256 slots, a silent concurrency limit that answers
429), each played by the simulator in its own process, at 1, 5, 100 and 1000 concurrent calls.
For each cell: plain ``ChatOpenAI`` (defaults: the SDK's 2 retries) cold, then the same object
again (warm); a fresh ``ClientPool()`` with nothing configured but the endpoint, cold, then the
same pool again (warm). Columns: each run's wall time, pool time over plain time (<= 1.05 is
the goal, plus 0.1 s of noise) and the calls that failed.

    .venv/bin/python benchmarks/bench_never_slower.py [--kinds silent,local16] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from langchain_openai import ChatOpenAI

from benchmarks._drive import drive
from rat_langchain import ClientPool, RatConfig, resilient
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "gpt-4o-mini"
CONCURRENCY = (1, 5, 100, 1000)
ROUNDS = 3  # rounds of a short cell (median reported)
SHORT_S = 5.0  # a cell whose plain run is shorter than this is short


@dataclass(frozen=True)
class Kind:
    name: str
    settings: dict[str, Any]
    rate: float | None = None  # calls per second the server allows, where it limits a rate

    def calls(self, concurrency: int, quick: bool) -> int:
        """Enough calls that a run lasts about a second or more, at most a few seconds."""
        base = {1: 10, 5: 50, 100: 500, 1000: 1000}[concurrency]
        if quick:
            base = max(concurrency, base // 5)
        if self.rate is not None:
            base = min(base, max(concurrency, int(3 * self.rate)))
        return base

    def floor(self, calls: int, concurrency: int) -> float:
        """The least time the server allows ``calls``, ``concurrency`` at a time: rounds of
        one answer's latency, as many at once as the caller and the server's slots allow,
        and no faster than its request bucket lets them go (its burst at once, the rest at
        its rate, the last answer's latency after)."""
        latency = self.settings.get("latency_ms", 0.0) / 1000.0
        at_once = min(
            concurrency, self.settings.get("slots") or self.settings.get("max_in_flight") or calls
        )
        floor = math.ceil(calls / at_once) * latency
        rpm = self.settings.get("rpm")
        if rpm is not None and self.settings.get("limit_style", "bucket") == "bucket":
            rate = rpm / 60.0
            burst = rate * self.settings.get("limit_window_s", 60.0)
            floor = max(floor, max(0.0, calls - burst) / rate + latency)
        return floor


KINDS = {
    "announced": Kind(
        "announces 100k RPM / 100M TPM (OpenAI-style headers), 100 ms",
        {"latency_ms": 100, "rpm": 100_000, "tpm": 100_000_000},
    ),
    "azure": Kind(
        "Azure-style: remaining only, 60k RPM over 10 s windows, 100 ms",
        {
            "latency_ms": 100,
            "rpm": 60_000,
            "limit_window_s": 10.0,
            "limit_style": "fixed_window",
            "limit_headers": "azure",
        },
    ),
    "silent_rate": Kind(
        "silent, 3000 RPM enforced per second (50/s), no Retry-After, 100 ms",
        {
            "latency_ms": 100,
            "rpm": 3000,
            "limit_window_s": 1.0,
            "limit_headers": "none",
            "retry_after": False,
        },
        rate=50.0,
    ),
    "silent": Kind("silent and unlimited (a gateway, a proxy), 100 ms", {"latency_ms": 100}),
    "local16": Kind(
        "local server, 16 slots, the rest queue (Ollama, llama.cpp), 200 ms",
        {"latency_ms": 200, "slots": 16},
        rate=80.0,
    ),
    "local256": Kind(
        "local server, 256 slots (vLLM batches what is in flight), 1 s",
        {"latency_ms": 1000, "slots": 256},
        rate=256.0,
    ),
    "silent_concurrency": Kind(
        "silent concurrency limit: 16 in flight, one more is a 429 (no headers), 200 ms",
        {"latency_ms": 200, "max_in_flight": 16, "limit_headers": "none"},
        rate=80.0,
    ),
}


@dataclass(frozen=True)
class Run:
    """One client's run of a cell: its wall time, the calls that failed, and when each
    success came (seconds from the start, in order)."""

    wall: float
    failed: int
    finished: tuple[float, ...]

    def time_to(self, successes: int) -> float:
        """When this run had ``successes`` calls done (its wall time if it never did)."""
        if successes <= 0:
            return 0.0
        return self.finished[successes - 1] if successes <= len(self.finished) else self.wall


async def _timed(model: Any, calls: int, concurrency: int) -> Run:
    async def call(i: int) -> Any:
        return await model.ainvoke(f"question {i}")

    finished: list[float] = []
    ok, wall = await drive(calls, concurrency, call, finished=finished)
    return Run(wall, calls - ok, tuple(finished))


def _fresh_plain_client() -> None:
    """Make the next plain ``ChatOpenAI`` cold, as in a fresh process: LangChain caches its
    default HTTP client per process (by base URL and timeout), so without this only the first
    cell's plain run would open its connections and every later "cold" run would be warm."""
    from langchain_openai.chat_models import _client_utils

    cached = getattr(_client_utils, "_cached_async_httpx_client", None)
    if cached is not None:
        cached.cache_clear()


async def _round(
    sim: SimulatorProcess, kind: Kind, calls: int, concurrency: int, order: tuple[str, ...]
) -> dict[str, Run]:
    """One round: each client cold (a fresh one), then the same one warm."""
    runs: dict[str, Run] = {}
    pool = ClientPool(_config(sim, remember=False))  # cold: nothing an earlier round learned
    try:
        for label in order:
            if label == "plain":
                _fresh_plain_client()
                model: Any = ChatOpenAI(
                    model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=20
                )
            else:
                model = pool.chat_model(model=MODEL, max_tokens=20)
            for phase in ("cold", "warm"):
                sim.configure(**kind.settings)  # a fresh server state for each run
                sim.reset_stats()
                gc.collect()  # no run pays for the garbage of the one before it
                runs[f"{label} {phase}"] = await _timed(model, calls, concurrency)
            if label == "plain":
                # closed, not left to the garbage collector with its connections open: a
                # plain call of a later round then hung now and then, its answer unread
                await model.root_async_client.close()
    finally:
        await pool.aclose()
    return runs


@dataclass(frozen=True)
class Cell:
    """A cell's figures over its rounds: each run's median time and its worst round's
    failures; where plain failed calls, the goodput and same-work ratios (median over rounds)."""

    label: str
    calls: int
    time: dict[str, float]
    failed: dict[str, int]
    goodput: dict[str, float]  # phase -> pool / plain, successful calls per second
    same_work: dict[str, float]  # phase -> pool's time to plain's successes / plain's time

    @property
    def plain_failed(self) -> bool:
        return any(self.failed[f"plain {phase}"] for phase in ("cold", "warm"))


def _config(sim: SimulatorProcess, *, remember: bool | str) -> RatConfig:
    """Nothing configured but the endpoint; learned limits remembered in the file
    ``remember`` names, or not at all (False)."""
    limits: dict[str, Any] = {"remember": remember is not False}
    if isinstance(remember, str):
        limits["remember_path"] = remember
    return RatConfig.from_dict(
        {
            "endpoint": {"base_url": sim.base_url, "api_key": KEY},
            "performance": {"rate_limiting": limits},
        },
        env={},
    )


async def _remembered(kinds: list[str], quick: bool) -> None:
    """Issue 33: cold with memory. A pool runs a cell cold then warm and closes (saving what it
    learned); a fresh pool reading that file runs it again (a CLI run or a serverless start
    after the first): its time against a cold pool's with nothing remembered, the warm pool's,
    and plain ChatOpenAI's cold, on the same server in the same run."""
    import tempfile

    rows = [
        "\nCold with memory: a fresh pool starting from what the last pool learned (time in "
        "s; ratio = over plain cold)\n",
        "| server | concurrent x calls | plain cold | pool cold | pool cold, remembered "
        "| pool warm | ratio cold | ratio remembered | failed (pool cold / remembered) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in kinds:
        kind = KINDS[name]
        with SimulatorProcess(**kind.settings) as sim:
            for concurrency in (100, 1000):
                calls = kind.calls(concurrency, quick)
                runs: dict[str, Run] = {}
                path = tempfile.mktemp(prefix="rat-limits-", suffix=".json")
                _fresh_plain_client()
                plain: Any = ChatOpenAI(
                    model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=20
                )
                for label, remember in (
                    ("plain cold", None),
                    ("pool cold", False),
                    ("first", path),
                    ("remembered", path),
                ):
                    pool = None if remember is None else ClientPool(_config(sim, remember=remember))
                    model = plain if pool is None else pool.chat_model(model=MODEL, max_tokens=20)
                    for phase in ("", " warm") if label == "first" else ("",):
                        sim.configure(**kind.settings)
                        sim.reset_stats()
                        gc.collect()
                        runs[label + phase] = await _timed(model, calls, concurrency)
                    if pool is not None:
                        await pool.aclose()  # the first one saves what it learned
                await plain.root_async_client.close()
                pc, cold, again, warm = (
                    runs[k].wall for k in ("plain cold", "pool cold", "remembered", "first warm")
                )
                rows.append(
                    f"| {name} | {concurrency} x {calls} | {pc:.2f} | {cold:.2f} | {again:.2f} "
                    f"| {warm:.2f} | {_ratio(cold, pc)} | {_ratio(again, pc)} "
                    f"| {runs['pool cold'].failed} / {runs['remembered'].failed} |"
                )
    print("\n".join(rows), flush=True)


async def _cell(sim: SimulatorProcess, kind: Kind, concurrency: int, quick: bool) -> Cell:
    """The cell's runs: the median time of ``ROUNDS`` rounds where a run is short (on two
    shared cores one run of a second or two moves by a tenth of a second from run to run),
    the clients' order alternating; the failures of the worst round."""
    calls = kind.calls(concurrency, quick)
    rounds = [await _round(sim, kind, calls, concurrency, ("plain", "pool"))]
    if rounds[0]["plain cold"].wall < SHORT_S:
        for r in range(1, ROUNDS):
            order = ("pool", "plain") if r % 2 else ("plain", "pool")
            rounds.append(await _round(sim, kind, calls, concurrency, order))
    goodput, same_work = {}, {}
    for phase in ("cold", "warm"):
        pairs = [(one[f"plain {phase}"], one[f"pool {phase}"]) for one in rounds]
        goodput[phase] = statistics.median(
            [
                ((calls - pool.failed) / pool.wall) / max((calls - plain.failed) / plain.wall, 1e-9)
                for plain, pool in pairs
            ]
        )
        same_work[phase] = statistics.median(
            [pool.time_to(calls - plain.failed) / plain.wall for plain, pool in pairs]
        )
    return Cell(
        f"{concurrency} x {calls}",
        calls,
        {label: statistics.median([one[label].wall for one in rounds]) for label in rounds[0]},
        {label: max(one[label].failed for one in rounds) for label in rounds[0]},
        goodput,
        same_work,
    )


def _ratio(pool: float, plain: float) -> str:
    ratio = pool / plain
    ok = pool <= 1.05 * plain + 0.1
    return f"{ratio:.2f}" + ("" if ok else " (slower)")


def _where_plain_failed(cell: Cell) -> tuple[str, str]:
    """Where plain failed calls its time is not the work done (a failed call ends early): the
    goodput (successful calls per second, pool over plain) and the same work (the time the
    pool took to finish as many calls as plain did, over plain's time), cold / warm."""
    if not cell.plain_failed:
        return "", ""
    goodput = " / ".join(
        f"{g:.2f}" + ("" if g >= 1 / 1.05 else " (lower)") for g in cell.goodput.values()
    )
    same = " / ".join(
        f"{w:.2f}" + ("" if w <= 1.05 else " (slower)") for w in cell.same_work.values()
    )
    return goodput, same


async def _main(kinds: list[str], quick: bool) -> None:
    print("Never slower: the pool at zero configuration against plain ChatOpenAI, same server")
    print(
        "(time in s, the median of 3 rounds where a run is short; ratio = pool / plain, goal "
        "<= 1.05 + 0.1 s; failed = calls that failed, cold + warm, worst round; where plain "
        "failed calls, goodput = successful calls per second, pool / plain, goal >= 0.95, "
        "and same work = the time the pool took to finish as many calls as plain finished, "
        "over plain's time, goal <= 1.05; each cold / warm, the median over rounds; floor = "
        "the least time the server allows the calls: its latency, slots and bucket)"
    )
    for name in kinds:
        kind = KINDS[name]
        rows = [
            f"\n{kind.name}\n",
            "| concurrent x calls | plain cold | pool cold | ratio cold | plain warm | pool warm "
            "| ratio warm | failed plain / pool | goodput | same work | floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        with SimulatorProcess(**kind.settings) as sim:
            for concurrency in CONCURRENCY:
                cell = await _cell(sim, kind, concurrency, quick)
                t, f = cell.time, cell.failed
                pc, rc, pw, rw = t["plain cold"], t["pool cold"], t["plain warm"], t["pool warm"]
                goodput, same = _where_plain_failed(cell)
                floor = kind.floor(cell.calls, concurrency)
                rows.append(
                    f"| {cell.label} | {pc:.2f} | {rc:.2f} | {_ratio(rc, pc)} | {pw:.2f} "
                    f"| {rw:.2f} | {_ratio(rw, pw)} "
                    f"| {f['plain cold'] + f['plain warm']} / {f['pool cold'] + f['pool warm']} "
                    f"| {goodput} | {same} | {floor:.2f} |"
                )
        print("\n".join(rows), flush=True)
    await _remembered(kinds, quick)


async def _deadlines() -> None:
    """Issue 20's two failure cases: calls under a caller's deadline on a slow silent server,
    and a silent server where 10 % of attempts hang, under ``resilient(timeout=2)``."""
    rows = [
        "\nDeadlines and hangs (failed calls; the plain client is the baseline)\n",
        "| case | client | failed | breaker |",
        "|---|---|---|---|",
    ]
    with SimulatorProcess(latency_ms=1000) as sim:
        config = RatConfig.from_dict(
            {"endpoint": {"base_url": sim.base_url, "api_key": KEY}}, env={}
        )
        pool = ClientPool(config)
        models = {
            "plain ChatOpenAI": ChatOpenAI(model=MODEL, base_url=sim.base_url, api_key=KEY),  # type: ignore[arg-type]
            "pool, defaults": pool.chat_model(model=MODEL),
        }
        for label, model in models.items():

            async def call(i: int, model: Any = model) -> Any:
                return await asyncio.wait_for(model.ainvoke(f"q{i}"), 5.0)

            ok, _ = await drive(300, 100, call)
            rows.append(
                f"| 1 s answers, 300 calls 100 at a time, each under wait_for(5 s) "
                f"| {label} | {300 - ok} | |"
            )
        await pool.aclose()
    with SimulatorProcess(latency_ms=20, hang_rate=0.1, seed=3) as sim:
        config = RatConfig.from_dict(
            {"endpoint": {"base_url": sim.base_url, "api_key": KEY}}, env={}
        )
        plain = ChatOpenAI(model=MODEL, base_url=sim.base_url, api_key=KEY, max_retries=0)  # type: ignore[arg-type]
        wrapped = resilient(plain, timeout=2, config=config)
        ok, _ = await drive(100, 50, lambda i: wrapped.ainvoke(f"q{i}"))
        breaker = wrapped.guard.breaker
        state = breaker.state.value if breaker is not None else "none"
        rows.append(
            f"| 10 % of attempts hang, 20 ms, 100 calls 50 at a time "
            f"| resilient(ChatOpenAI, timeout=2) | {100 - ok} | {state} |"
        )
    print("\n".join(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated, of: " + ", ".join(KINDS)
    )
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls")
    parser.add_argument("--no-deadlines", action="store_true", help="skip the deadline cases")
    args = parser.parse_args()
    started = time.perf_counter()
    # one event loop: LangChain's default clients are cached per process and bound to the
    # first loop that used them
    asyncio.run(_main(args.kinds.split(","), args.quick))
    if not args.no_deadlines:
        asyncio.run(_deadlines())
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
