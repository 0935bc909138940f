"""The demo's main job, end to end, done twice: with rat_langchain and the way it was done before.

One workload: index a small corpus, plan a research request with the LLM and execute it (with
verification), then answer 20 questions from the index — while the simulator enforces 600 RPM
over 1 s windows and fails 5 % of requests with a 500. Then the same workload the old way:
LangChain's defaults (ChatOpenAI with the SDK's retries, OpenAIEmbeddings), one embedding request
per chunk, the plan run step by step with each verification inline, the questions one by one.
Prints a side-by-side table and writes a PNG chart.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from rat_langchain._demo.plan import PLAN, REQUEST, build_tools, slow_verifier
from rat_langchain._demo.stats import learned_lines
from rat_langchain.config import RatConfig
from rat_langchain.index.faiss_store import FaissStore
from rat_langchain.index.indexer import load_folder
from rat_langchain.plans.executor import ParallelPlanExecutor
from rat_langchain.plans.orchestrator import Orchestrator
from rat_langchain.plans.planner import Planner
from rat_langchain.pool.batcher import LLMBatcher
from rat_langchain.pool.pool import ClientPool
from rat_langchain.sim import Reply, SimulatorProcess

KEY = "sk-demo-simulated"
CORPUS = Path("examples/corpus")
CHART = Path("demo-output/demo.png")
LIMITS = {"rpm": 600, "limit_window_s": 1.0, "error_rate": 0.05}
QUESTIONS = [
    f"{topic} ({n})"
    for n in range(5)
    for topic in (
        "What does the circuit breaker do when an endpoint is down?",
        "Why batch embedding requests?",
        "How does the pool reuse connections?",
        "What happens when the rate limit is reached?",
    )
]
_ANSWER = ChatPromptTemplate.from_messages(
    [("system", "Answer from this context:\n{context}"), ("user", "{question}")]
)


@dataclass
class Target:
    """Where the workload runs: the simulator (which also counts), or a real endpoint."""

    base_url: str | None
    key: str
    sim: SimulatorProcess | None = None
    config: RatConfig | None = None  # the user's, for a real endpoint

    def push_plan(self) -> None:
        if self.sim is not None:  # a real LLM writes its own plan
            self.sim.push(Reply(content=json.dumps(PLAN)))


@dataclass
class Way:
    label: str
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    server: dict[str, int] = field(default_factory=dict)
    learned: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _chunks() -> list[Document]:
    return list(load_folder(CORPUS, chunk_size=150, chunk_overlap=0))


def _config() -> RatConfig:
    """Nothing set: the limits and their window are what the limiter learns from the server."""
    return RatConfig.from_dict({}, env={})


async def _answer_chain(store: FaissStore, llm: Any) -> Any:
    async def retrieve(question: str) -> dict[str, str]:
        hits = await store.asimilarity_search(question, k=2)
        return {"context": "\n\n".join(h.page_content for h in hits), "question": question}

    return RunnableLambda(retrieve) | _ANSWER | llm | StrOutputParser()


async def _new_way(target: Target, model: str, way: Way) -> None:
    async with ClientPool(target.config or _config()) as pool:
        emb = pool.embeddings(base_url=target.base_url, api_key=target.key)
        llm = pool.chat_model(model=model, base_url=target.base_url, api_key=target.key)
        start = time.perf_counter()
        store = FaissStore(emb)
        await store.aadd_documents(_chunks())  # batched, concurrent, validated
        way.seconds["index"] = time.perf_counter() - start

        tools = build_tools(llm)
        orchestrator = Orchestrator(
            Planner(llm, tools), ParallelPlanExecutor(tools, verifier=slow_verifier)
        )
        target.push_plan()
        start = time.perf_counter()
        try:
            result = await orchestrator.aexecute(REQUEST)  # eager, background verification
            way.errors["plan + execute"] = sum(r.error is not None for r in result.steps.values())
        except Exception as exc:  # e.g. a real LLM's plan still invalid after the repairs
            print(f"  rat_langchain: the plan failed: {exc}")
            way.errors["plan + execute"] = 1
        way.seconds["plan + execute"] = time.perf_counter() - start

        chain = await _answer_chain(store, llm)
        start = time.perf_counter()
        answers = await LLMBatcher(chain, max_concurrency=20).abatch(QUESTIONS)
        way.seconds["answer 20 questions"] = time.perf_counter() - start
        way.errors["answer 20 questions"] = sum(isinstance(a, Exception) for a in answers)
        way.learned = learned_lines(pool.metrics.snapshot())


async def _old_way(target: Target, model: str, way: Way) -> None:
    emb = OpenAIEmbeddings(  # the aliases LangChain documents for its base URL and key
        model="text-embedding-3-small",
        openai_api_base=target.base_url,
        openai_api_key=target.key,
        check_embedding_ctx_length=False,
    )
    llm = ChatOpenAI(model=model, base_url=target.base_url, api_key=target.key, timeout=60)
    errors = 0
    start = time.perf_counter()
    store = FaissStore(emb)
    for chunk in _chunks():  # one embedding request per chunk, one after another
        try:
            await store.aadd_documents([chunk])
        except Exception:
            errors += 1
    way.seconds["index"] = time.perf_counter() - start
    way.errors["index"] = errors

    tools = build_tools(llm)
    sequential = ParallelPlanExecutor(
        tools, parallel=False, verifier=slow_verifier, background_verification=False
    )
    target.push_plan()
    start = time.perf_counter()
    try:
        result = await Orchestrator(Planner(llm, tools), sequential).aexecute(REQUEST)
        way.errors["plan + execute"] = sum(r.error is not None for r in result.steps.values())
    except Exception as exc:
        print(f"  old way: the plan failed: {exc}")
        way.errors["plan + execute"] = 1
    way.seconds["plan + execute"] = time.perf_counter() - start

    chain = await _answer_chain(store, llm)
    errors = 0
    start = time.perf_counter()
    for question in QUESTIONS:  # one after another
        try:
            await chain.ainvoke(question)
        except Exception:
            errors += 1
    way.seconds["answer 20 questions"] = time.perf_counter() - start
    way.errors["answer 20 questions"] = errors
    # LangChain never closes the clients it creates; closed here, on their loop, or they print
    # "Event loop is closed" when collected after it (the bug the per-loop pool avoids)
    await emb.async_client._client.close()
    if llm.root_async_client is not None:
        await llm.root_async_client.close()


def _run(target: Target, model: str, label: str, job: Any) -> Way:
    way = Way(label)
    sim = target.sim
    if sim is not None:
        sim.reset_stats()
        sim.configure(**LIMITS)
    asyncio.run(job(target, model, way))
    if sim is None:
        return way
    stats = sim.stats()
    way.server = {
        "requests": stats.total_requests,
        "429s": stats.count(status=429),
        "500s": stats.count(status=500),
        "TCP connections": stats.connections_opened,
    }
    return way


def e2e_part(target: Target, model: str) -> list[Way]:
    if not CORPUS.is_dir():
        print(f"\nEnd to end: skipped ({CORPUS} not found; run the demo from the project root)")
        return []
    where = (
        f"The simulator enforces {LIMITS['rpm']} RPM over 1 s windows and fails "
        f"{LIMITS['error_rate']:.0%} of requests with a 500."
        if target.sim is not None
        else f"Against {target.base_url or 'api.openai.com'} with your config's limits."
    )
    print(
        f"\nThe main job, end to end, twice: index {CORPUS}, plan and run a research request, "
        f"answer {len(QUESTIONS)} questions from the index.\n{where}"
    )
    old = _run(target, model, "old way (LangChain defaults, sequential)", _old_way)
    new = _run(target, model, "rat_langchain", _new_way)
    if target.sim is not None:
        target.sim.configure(rpm=None, error_rate=0.0, limit_window_s=60.0)
    _print_table(old, new)
    _chart(old, new, simulated=target.sim is not None)
    return [old, new]


def _print_table(old: Way, new: Way) -> None:
    print(f"\n{'phase':<22}{'old way s':>10}{'rat s':>8}{'speed-up':>10}{'errors old/new':>16}")
    for phase in old.seconds:
        a, b = old.seconds[phase], new.seconds.get(phase, 0.0)
        errors = f"{old.errors.get(phase, 0)}/{new.errors.get(phase, 0)}"
        print(f"{phase:<22}{a:>10.2f}{b:>8.2f}{a / b if b else 0:>9.1f}x{errors:>16}")
    speed = old.total / new.total if new.total else 0.0
    print(f"{'total':<22}{old.total:>10.2f}{new.total:>8.2f}{speed:>9.1f}x")
    if old.server:
        print(f"\n{'seen by the server':<22}{'old way':>10}{'rat':>8}")
    for name in old.server:
        print(f"{name:<22}{old.server[name]:>10}{new.server[name]:>8}")
    print(
        "errors = what the caller saw (failed steps, failed questions); 500s and 429s the "
        "server sent, which rat_langchain's retries and limiter absorbed"
    )
    if new.learned:
        print("\nrat_langchain, configured with nothing but the endpoint, learned from the server:")
        print("\n".join(new.learned))


def _chart(old: Way, new: Way, *, simulated: bool = True) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: pip install 'rat-langchain[demo]' for matplotlib)")
        return
    phases = list(old.seconds)
    figure, axis = plt.subplots(figsize=(8, 3.6))
    rows = range(len(phases))
    axis.barh([r + 0.2 for r in rows], [old.seconds[p] for p in phases], 0.4, label=old.label)
    axis.barh([r - 0.2 for r in rows], [new.seconds[p] for p in phases], 0.4, label=new.label)
    axis.set_yticks(list(rows), phases)
    axis.invert_yaxis()
    axis.set_xlabel("seconds (lower is better)")
    axis.set_title(
        "Same workload, simulator at 600 RPM with 5% errors" if simulated else "Same workload"
    )
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    for bars in axis.containers:
        axis.bar_label(bars, fmt="%.2f s", padding=3, fontsize=8)  # type: ignore[arg-type]
    axis.margins(x=0.12)
    figure.tight_layout()
    CHART.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(CHART, dpi=110)
    plt.close(figure)
    print(f"chart written to {CHART.resolve()}")
