"""The documentation says what the code does: its Python blocks run as a reader pastes them,
its quoted errors are the real ones, and every page that says where ``rpm_limit: auto`` starts
says it with the code's own numbers. Before, config.yaml said 500 RPM, resilience.md "500 /
200k" and configuration.md "not applied until the server refuses", and README quoted an error
message the code no longer gave."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from rat_langchain import ClientPool, ConfigError, RatConfig
from rat_langchain.guards.bucket import START_RPM, START_TPM
from rat_langchain.guards.learn import INITIAL_WINDOW
from rat_langchain.sim import SimulatorThread
from tests.support.snippets import python_blocks, run_block

ROOT = Path(__file__).resolve().parents[2]
# Pages whose every Python block is meant to run in order, in the context below.
RUNNABLE_PAGES = ["README.md", "docs/quickstart.md", "docs/memory.md"]


@tool
def search(query: str) -> dict[str, Any]:
    """Search the web."""
    return {"items": [{"snippet": f"about {query}"}]}


@tool
def summarise(text: str) -> str:
    """Summarise a text."""
    return text[:40]


@tool
def my_tool(query: str) -> str:
    """A reader's own tool."""
    return query


def _reader_context(pool: ClientPool) -> dict[str, Any]:
    """The names a page's fragments take as the reader's own (a chain, texts, tools)."""
    return {
        "pool": pool,
        "texts": ["FAISS keeps vectors", "pickle runs code"],
        "ids": ["faiss", "pickle"],
        "my_chain": RunnableLambda(lambda x: x),
        "my_tool": my_tool,
        "inputs": [1, 2],
        "search": search,
        "summarise": summarise,
    }


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_python_block_of_the_page_runs(
    page: str, sim: SimulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no Python block"
    shutil.copy(ROOT / "config.yaml", tmp_path)  # the pages load config.yaml from the cwd
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-reader")
    with ClientPool(RatConfig.load()) as pool:
        namespace = _reader_context(pool)
        for number, block in enumerate(blocks, 1):
            run_block(block, namespace, f"{page}, Python block {number}")


def test_the_error_readme_quotes_is_the_one_the_code_gives() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": -5}}}, env={})
    [(path, message)] = caught.value.errors
    assert f"`{path}: {message}`" in readme


def _flat(page: str) -> str:
    text = (ROOT / page).read_text(encoding="utf-8").replace("#", " ")
    return " ".join(text.split())


@pytest.mark.parametrize(
    "page", ["config.yaml", "docs/configuration.md", "docs/resilience.md", "README.md"]
)
def test_every_page_says_where_auto_starts_with_the_codes_numbers(page: str) -> None:
    text = _flat(page)
    assert f"{INITIAL_WINDOW} requests in flight before the first answer" in text
    for said in re.findall(r"(?:from|start(?:s)? at) (\d[\d_ ]*) ?(?:RPM|/)", text):
        # a request rate at the start is only the Redis backend's
        assert int(said.replace("_", "").replace(" ", "")) == START_RPM
        assert "redis" in text.lower()
    if page != "README.md":
        assert f"{START_TPM} until the first answer" in text
