"""examples/fastapi_rag.py under uvicorn on a free loopback port, against the simulator: async
and sync routes answer concurrent users, /metrics is Prometheus text, shutdown closes the pool."""

from __future__ import annotations

import asyncio
import importlib
import socket
from types import ModuleType

import httpx
import pytest

from rat_langchain import RatConfig
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY

uvicorn = pytest.importorskip("uvicorn")


def _example() -> ModuleType:
    """examples/fastapi_rag.py, imported as the package it is in the repository (a namespace
    package: the root is on the path wherever tests and benchmarks run)."""
    return importlib.import_module("examples.fastapi_rag")


async def test_the_fastapi_example_serves_concurrent_users(sim: SimulatorThread) -> None:
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    app = _example().create_app(config)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))  # a free port, listening before uvicorn starts: the
    listening.listen(128)  # requests wait in the backlog until it serves (no polling for it)
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve(sockets=[listening]))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                asked = await asyncio.gather(
                    *(
                        client.post(route, json={"question": f"what is pooling? {i}"})
                        for i in range(20)
                        for route in ("/ask", "/ask-sync")
                    )
                )
                page = await client.get("/metrics")
        finally:
            server.should_exit = True
    listening.close()
    assert [r.status_code for r in asked] == [200] * 40
    assert all(r.json()["answer"] for r in asked)
    assert page.status_code == 200
    assert 'rat_calls_total{endpoint="' in page.text
    assert API_KEY not in page.text
