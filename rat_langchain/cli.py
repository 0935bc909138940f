"""``rat-langchain`` (also ``python -m rat_langchain``): sim, demo, index and search.

Everything heavy is imported inside the command that needs it, so ``--help`` answers at once.
Benchmarks are not a command: they run from a checkout (``make bench``, ``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rat_langchain.sim import SimConfig


def _sim_config(args: argparse.Namespace) -> SimConfig:
    from rat_langchain.sim import SimConfig

    base = json.loads(args.config_json) if args.config_json else {}
    flags = {
        "rpm": args.rpm,
        "tpm": args.tpm,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "per_token_ms": args.per_token_ms,
        "error_rate": args.error_rate,
        "unavailable_rate": args.unavailable_rate,
        "hang_rate": args.hang_rate,
        "reset_rate": args.reset_rate,
        "malformed_rate": args.malformed_rate,
        "seed": args.seed,
        "api_key": args.api_key,
    }
    return SimConfig.model_validate({**base, **{k: v for k, v in flags.items() if v is not None}})


async def _serve(config: SimConfig, host: str, port: int) -> None:
    from rat_langchain.sim import READY_PREFIX, Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config, host=host, port=port) as sim:
        # The first line is machine-read by SimulatorProcess; keep its shape.
        print(f"{READY_PREFIX}{sim.base_url}", flush=True)
        await stop.wait()


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run the OpenAI-compatible simulator until interrupted")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--rpm", type=int, help="requests per minute (default: unlimited)")
    p.add_argument("--tpm", type=int, help="tokens per minute (default: unlimited)")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--per-token-ms", type=float)
    p.add_argument("--error-rate", type=float, help="share of requests answered 500")
    p.add_argument("--unavailable-rate", type=float, help="share answered 503")
    p.add_argument("--hang-rate", type=float, help="share that never answer")
    p.add_argument("--reset-rate", type=float, help="share whose connection is reset")
    p.add_argument("--malformed-rate", type=float, help="share answered with broken JSON")
    p.add_argument("--seed", type=int)
    p.add_argument("--api-key", help="require exactly this bearer key")
    p.add_argument("--config-json", help="SimConfig fields as JSON (flags win)")


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="pooled vs default ChatOpenAI on the simulator (or --real)")
    p.add_argument("--real", action="store_true", help="use OPENAI_API_KEY / OPENAI_BASE_URL")
    p.add_argument("--config", help="path to config.yaml (default: built-in defaults)")
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[5, 50, 500],
        help="requests in flight per round (default: 5 50 500)",
    )
    p.add_argument("--latency-ms", type=float, default=100.0, help="simulator latency")
    p.add_argument("--model", default=None)
    p.add_argument("--skip-resilience", action="store_true", help="only the pooling part")
    p.add_argument("--resilience-calls", type=int, default=200, help="calls in the resilience part")


def _add_index(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="index .txt/.md files into a FAISS store (resumable)")
    p.add_argument("path", help="a folder (or one file) of .txt/.md")
    p.add_argument("--out", required=True, help="store folder; an existing one is resumed")
    p.add_argument("--config", help="path to config.yaml")
    p.add_argument("--batch-size", type=int, default=8192, help="documents per store update")
    p.add_argument("--checkpoint-every", type=float, default=5.0, help="seconds between saves")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line at each checkpoint")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--batch",
        dest="mode",
        action="store_const",
        const="batch",
        help="embed through OpenAI's Batch API: half the price, results within 24 h; run the "
        "same command again to resume after a crash",
    )
    mode.add_argument(
        "--mode",
        choices=("online", "batch", "auto"),
        help="online (default), batch, or auto: the Batch API from 2M tokens to embed",
    )
    p.add_argument(
        "--poll", type=float, default=5.0, help="seconds before the first poll of a batch"
    )
    p.add_argument(
        "--on-failed",
        choices=("online", "report"),
        default="online",
        help="batch requests that failed or expired: embed them now (online) or list them",
    )
    s = sub.add_parser("search", help="search a store made by `index`")
    s.add_argument("store", help="store folder")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=4)
    s.add_argument("--config", help="path to config.yaml")


def _index(args: argparse.Namespace) -> int:
    from rat_langchain.config import RatConfig
    from rat_langchain.index.batch_api import BatchSettings
    from rat_langchain.index.indexer import BatchIndexer, load_folder
    from rat_langchain.pool.pool import ClientPool

    config = RatConfig.load(args.config) if args.config else RatConfig.load()
    # a list: progress counts against the whole corpus (its chunks are held in the store anyway)
    documents = list(load_folder(args.path))  # a missing or empty folder fails first
    if not documents:
        raise ValueError(f"{args.path} holds no .txt or .md text to index")
    indexer: BatchIndexer | None = None

    def checkpointed(count: int, folder: object) -> None:
        if args.verbose:
            print(f"checkpoint: {count} documents saved to {folder}", flush=True)

    async def run() -> int:
        nonlocal indexer
        async with ClientPool(config) as pool:
            indexer = BatchIndexer(
                pool.embeddings(),
                out=args.out,
                batch_size=args.batch_size,
                checkpoint_every_s=args.checkpoint_every,
                on_checkpoint=checkpointed,
                mode=args.mode or "online",
                batch=BatchSettings(
                    on_failed=args.on_failed, poll_s=args.poll, max_poll_s=max(60.0, args.poll)
                ),
            )
            report = await indexer.aindex(documents)
        if report.tokens is not None:
            print(
                f"{report.tokens} tokens to embed: US${_money(report.cost_online)} online, "
                f"US${_money(report.cost_batch)} through the Batch API; took {report.mode}"
            )
        if report.batch is not None:
            b = report.batch
            print(
                f"batches: {b.batches_submitted} submitted, {b.batches_resumed} resumed, "
                f"{b.queue_waits} queue waits, {b.embedded_online} documents embedded online"
            )
        print(
            f"indexed {report.added} new, {report.skipped} already there, "
            f"{len(report.failed)} failed, of {report.total} chunks in {report.seconds:.1f} s"
        )
        for doc_id, reason in report.failed.items():
            print(f"  failed {doc_id}: {reason}")
        return 1 if report.failed else 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        saved = indexer.saved if indexer is not None else None
        what = "nothing saved" if not saved else f"{saved} of {len(documents)} chunks saved"
        print(
            f"interrupted: {what} in {args.out}; rerun the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        return 130


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _search(args: argparse.Namespace) -> int:
    from rat_langchain.config import RatConfig
    from rat_langchain.index.faiss_store import FaissStore
    from rat_langchain.pool.pool import ClientPool

    config = RatConfig.load(args.config) if args.config else RatConfig.load()

    async def run() -> None:
        async with ClientPool(config) as pool:
            store = FaissStore.load(args.store, pool.embeddings())
            hits = await store.asimilarity_search_with_score(args.query, k=args.k)
        for doc, score in hits:
            source = doc.metadata.get("source", "")
            snippet = " ".join(doc.page_content.split())[:100]
            print(f"{score:.3f}  {source}  {snippet}")

    asyncio.run(run())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. An error is one line on stderr naming the problem, and exit status 1;
    ``--debug`` shows the traceback instead."""
    parser = argparse.ArgumentParser(prog="rat-langchain", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim(sub)
    _add_demo(sub)
    _add_index(sub)
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except KeyboardInterrupt:
        print("rat-langchain: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        from rat_langchain.errors import ConfigError  # loaded by now: only config raises it

        # one line, but a ConfigError keeps its lines: one per key, and a YAML error's place
        text = str(exc) if isinstance(exc, ConfigError) else " ".join(str(exc).split())
        message = text or type(exc).__name__
        print(f"rat-langchain {args.command}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "sim":
        try:
            config = _sim_config(args)
        except ValueError as exc:
            parser.error(str(exc))
        asyncio.run(_serve(config, args.host, args.port))
        return 0
    if args.command == "index":
        return _index(args)
    if args.command == "search":
        return _search(args)
    if args.command == "demo":
        from rat_langchain._demo import run_demo

        return run_demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
