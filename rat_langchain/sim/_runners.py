"""Run the simulator off the caller's event loop: in a thread (tests, sync code) or in a process
(benchmarks and the demo, so the server never competes with the client for its loop or its GIL)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Coroutine, Iterator
from typing import Any, Self, TypeVar

from rat_langchain.sim._model import Reply, SimConfig, SimStats
from rat_langchain.sim._server import Simulator

__all__ = ["SimulatorProcess", "SimulatorThread", "endpoint_or_simulator"]

_T = TypeVar("_T")
READY_PREFIX = "rat-langchain simulator listening on "


class SimulatorThread:
    """A :class:`Simulator` on its own event loop in a daemon thread; a sync context manager.

    Example::

        with SimulatorThread(latency_ms=10) as sim:
            ChatOpenAI(base_url=sim.base_url, api_key="sk-test").invoke("hi")
            assert sim.stats().count("chat", 200) == 1
    """

    def __init__(self, config: SimConfig | None = None, **settings: Any) -> None:
        self._sim = Simulator(config, **settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator thread is not running; use `with SimulatorThread()`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stopped = asyncio.Event()
            try:
                await self._sim.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self._loop = asyncio.get_running_loop()
            ready.set()
            try:
                await self._stopped.wait()
            finally:
                await self._sim.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("the simulator thread did not start within 30 s")
        if failure:
            raise failure[0]

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._sim.base_url

    @property
    def url(self) -> str:
        return self._sim.url

    @property
    def config(self) -> SimConfig:
        return self._sim.config

    def stats(self) -> SimStats:
        async def snapshot() -> SimStats:
            return self._sim.stats()

        return self._call(snapshot())

    def reset_stats(self) -> None:
        async def reset() -> None:
            self._sim.reset_stats()

        self._call(reset())

    def configure(self, **changes: Any) -> None:
        async def configure() -> None:
            self._sim.configure(**changes)

        self._call(configure())

    def push(self, *replies: Reply | dict[str, Any], endpoint: str = "chat") -> None:
        async def push() -> None:
            self._sim.push(*replies, endpoint=endpoint)

        self._call(push())


class SimulatorProcess:
    """A simulator in a child process (``rat-langchain sim``), steered over ``/_sim`` endpoints."""

    def __init__(self, config: SimConfig | None = None, **settings: Any) -> None:
        base = config.model_dump() if config is not None else {}
        self.config = SimConfig.model_validate({**base, **settings})
        self._proc: subprocess.Popen[str] | None = None
        self._control: http.client.HTTPConnection | None = None
        self.url = ""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "rat_langchain", "sim", "--port", "0"]
        cmd += ["--config-json", self.config.model_dump_json(exclude_defaults=True)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"the simulator process did not start (it printed {line!r})")
        self.url = line[len(READY_PREFIX) :].strip().removesuffix("/v1")

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> bytes:
        # One kept-alive control connection, opened once: a new socket per control call would
        # show up in the very connection counter the caller is reading.
        if self._control is None:
            parsed = urllib.parse.urlsplit(self.url)
            self._control = http.client.HTTPConnection(
                parsed.hostname or "127.0.0.1", parsed.port, timeout=30
            )
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self._control.request(method, path, body=body, headers=headers)
        response = self._control.getresponse()
        data = response.read()
        if response.status >= 400:
            raise ValueError(f"simulator control {path} failed: {data.decode(errors='replace')}")
        return data

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        return json.loads(self._request("POST", path, payload))

    def stats(self) -> SimStats:
        return SimStats.model_validate_json(self._request("GET", "/_sim/stats"))

    def reset_stats(self) -> None:
        self._post("/_sim/reset", {})

    def configure(self, **changes: Any) -> None:
        self.config = SimConfig.model_validate(self._post("/_sim/config", changes))

    def push(self, *replies: Reply | dict[str, Any], endpoint: str = "chat") -> None:
        items = [r.model_dump() if isinstance(r, Reply) else r for r in replies]
        self._post("/_sim/push", {"replies": items, "endpoint": endpoint})


@contextlib.contextmanager
def endpoint_or_simulator(**settings: Any) -> Iterator[dict[str, str]]:
    """The endpoint to run against, as ``RatConfig``'s ``endpoint`` section: empty when
    ``OPENAI_API_KEY`` is set (the real endpoint the environment names, ``OPENAI_BASE_URL``
    honoured), else the ``base_url`` and ``api_key`` of a :class:`SimulatorThread` started with
    ``settings`` for the block.

    Why: scripts, notebooks and smoke tests that run the same with or without a key. Example::

        with endpoint_or_simulator(latency_ms=50) as endpoint:
            pool = ClientPool(RatConfig.from_dict({"endpoint": endpoint}))
    """
    if os.environ.get("OPENAI_API_KEY"):
        yield {}
        return
    with SimulatorThread(**settings) as sim:
        yield {"base_url": sim.base_url, "api_key": "sk-simulated"}
