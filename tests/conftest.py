"""Shared fixtures. Every test that needs an endpoint talks to the simulator over a real socket."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from rat_langchain import RatConfig
from rat_langchain.sim import Simulator, SimulatorThread
from tests.support.redis_server import RedisServer

API_KEY = "sk-test-SECRET-do-not-leak-0123456789"


@pytest.fixture(autouse=True)
def _own_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test its own user cache dir: learned limits a pool remembers when it closes
    (rate_limiting.remember) must not carry from one test into the next, nor into ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """A simulator on its own loop in a thread, so sync and async client code can both use it."""
    with SimulatorThread(seed=1234) as server:
        yield server


@pytest.fixture
async def loop_sim() -> AsyncIterator[Simulator]:
    """A simulator on the test's own loop (fake-clock-free, direct access to its state)."""
    async with Simulator(seed=1234) as server:
        yield server


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def pool_config(*, performance: dict[str, object] | None = None, **pooling: object) -> RatConfig:
    """Config for pooling tests: the default 500 RPM budget would make them about waiting."""
    sections: dict[str, object] = {
        "connection_pooling": pooling,
        "rate_limiting": {"enabled": False},
        **(performance or {}),
    }
    return RatConfig.from_dict({"performance": sections}, env={})


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
