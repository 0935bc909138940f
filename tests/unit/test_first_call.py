"""A fresh pool's first call costs what a plain ``ChatOpenAI``'s does: what can be done once a
process (the TLS context, the token tables) is not done again in a request's time."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest

from rat_langchain import ClientPool, RatConfig
from rat_langchain._tokens import encoding_for
from rat_langchain.pool import _http


def _config() -> RatConfig:
    return RatConfig.from_dict(
        {"endpoint": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"}}, env={}
    )


async def test_pools_and_loops_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a context loads the CA bundle (about 50 ms); a pool's inner client is built at
    its first request on a loop, so that cost used to land in the first answer's time."""
    built: list[Any] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    _http._ssl_context_for.cache_clear()
    for _ in range(2):
        pool = ClientPool(_config())
        llm = pool.chat_model(model="gpt-4o-mini")
        inner = await llm.root_async_client._client._per_loop.current()  # the loop's own client
        assert inner is not None
        await pool.aclose()
    assert len(built) == 1


def test_a_changed_ca_bundle_is_read_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = os.environ.get("SSL_CERT_FILE")
    first = _http._ssl_context()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert _http._ssl_context() is not first
    if original is None:
        monkeypatch.delenv("SSL_CERT_FILE")
    else:
        monkeypatch.setenv("SSL_CERT_FILE", original)
    assert _http._ssl_context() is first


def test_the_token_tables_load_when_the_model_is_made() -> None:
    encoding_for.cache_clear()
    pool = ClientPool(_config())
    pool.chat_model(model="gpt-4o-mini")
    assert encoding_for.cache_info().misses == 1
    calls = encoding_for.cache_info()
    pool.chat_model(model="gpt-4o-mini")  # loaded once a process
    assert encoding_for.cache_info().misses == calls.misses


def test_no_limiter_no_token_tables() -> None:
    config = _config()
    config.performance.rate_limiting.enabled = False
    encoding_for.cache_clear()
    ClientPool(config).chat_model(model="gpt-4o-mini")
    assert encoding_for.cache_info().misses == 0
