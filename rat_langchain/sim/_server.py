"""The OpenAI-compatible simulator: a real aiohttp server on loopback.

It is a product feature, not a test double: users benchmark their own chains against it. So it
speaks the wire format the openai SDK and langchain-openai send, answers with real 429s and
``x-ratelimit-*`` headers, injects faults at the transport level, and counts what it saw exactly.

Size: ~850 lines, one class per route table: each endpoint's handler (chat, embeddings, files,
batches, models) shares the server's limits, faults and counters; the parts that stand alone
are modules of their own (``_limits``, ``_content``, ``_batches``, ``_tokens``, ``_runners``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Self

import numpy as np
from aiohttp import BodyPartReader, web

import rat_langchain.sim._content as _content
from rat_langchain.sim._batches import BatchError, Batches
from rat_langchain.sim._limits import RateLimits
from rat_langchain.sim._model import Reply, SimConfig, SimStats
from rat_langchain.sim._tokens import chat_prompt_tokens, text_tokens, truncate

__all__ = ["Simulator"]

MAX_EMBEDDING_INPUTS = 2048
_NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", *_NATIVE_DIMENSIONS]
_ENDPOINTS = ("chat", "embeddings")


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


class _Fault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Simulator:
    """An OpenAI-compatible server on ``127.0.0.1`` with latency, rate limits and faults.

    Example::

        async with Simulator(rpm=600, latency_ms=50) as sim:
            client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test")
            await client.chat.completions.create(model="gpt-4o-mini", messages=[...])
            assert sim.stats().count("chat", 200) == 1

    It runs on the event loop that starts it; to keep it off the client's loop use
    :class:`SimulatorThread` (tests, sync code) or :class:`SimulatorProcess` (benchmarks).
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> None:
        base = config.model_dump() if config is not None else {}
        self.config = SimConfig.model_validate({**base, **settings})
        self._host = host
        self._port = port
        self._clock = clock
        self._rng = random.Random(self.config.seed)
        # one pair of buckets per model, as OpenAI limits each model separately
        self._limits: dict[tuple[str, str], RateLimits] = {}  # by (tenant, model)
        self._scripts: dict[str, deque[Reply]] = {name: deque() for name in _ENDPOINTS}
        self._stats = SimStats()
        self._busy = 0  # requests admitted and not yet answered (max_in_flight)
        self._slots: tuple[int, asyncio.Semaphore] | None = None  # (size, the slots)
        self._queued = 0  # requests waiting for a slot
        self.batches = self._new_batches()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running; use `async with Simulator()`")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to the openai SDK or ``ChatOpenAI``."""
        return f"{self.url}/v1"

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._file_upload)
        app.router.add_get("/v1/files/{id}", self._file_get)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_delete("/v1/files/{id}", self._file_delete)
        app.router.add_post("/v1/batches", self._batch_create)
        app.router.add_get("/v1/batches", self._batch_list)
        app.router.add_get("/v1/batches/{id}", self._batch_get)
        app.router.add_post("/v1/batches/{id}/cancel", self._batch_cancel)
        app.router.add_get("/_sim/stats", self._control_stats)
        app.router.add_post("/_sim/reset", self._control_reset)
        app.router.add_post("/_sim/config", self._control_config)
        app.router.add_post("/_sim/push", self._control_push)
        # handler_cancellation: a hanging handler ends when its client gives up and disconnects.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def protocol_factory() -> Any:
            self._stats.connections_opened += 1
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol_factory, self._host, self._port, reuse_address=True, backlog=2048
        )

    async def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- control -------------------------------------------------------------------------------

    def stats(self) -> SimStats:
        """A snapshot of the counters (a copy: later requests do not change it)."""
        snapshot = self._stats.model_copy(deep=True)
        if self._runner is not None and self._runner.server is not None:
            snapshot.connections_open = len(self._runner.server.connections)
        return snapshot

    def reset_stats(self) -> None:
        """Zero every counter and forget scripted replies; rate buckets start full again.
        Files and batches stay (a client may be resuming them)."""
        self._stats = SimStats()
        for script in self._scripts.values():
            script.clear()
        self._limits = {}

    def configure(self, **changes: Any) -> None:
        """Change settings while running, e.g. ``sim.configure(error_rate=0.5)``."""
        self.config = SimConfig.model_validate({**self.config.model_dump(), **changes})
        limit_fields = {"rpm", "tpm", "limit_window_s", "limit_style", "limit_headers", "tenants"}
        header_fields = {"retry_after", "lying_headers", "announced_rpm", "announced_tpm"}
        if (limit_fields | header_fields) & changes.keys():
            self._limits = {}
        if "seed" in changes:
            self._rng = random.Random(self.config.seed)

    def _limits_for(self, model: str, tenant: str = "") -> RateLimits:
        limits = self._limits.get((tenant, model))
        if limits is None:
            cfg = self.config
            account = (cfg.tenants or {}).get(tenant)
            limits = self._limits[(tenant, model)] = RateLimits(
                account.rpm if account else cfg.rpm,
                account.tpm if account else cfg.tpm,
                self._clock,
                cfg.limit_window_s,
                style=cfg.limit_style,
                headers=cfg.limit_headers,
                retry_after=cfg.retry_after,
                lying=cfg.lying_headers,
                announced=(cfg.announced_rpm, cfg.announced_tpm),
            )
        return limits

    def push(self, *replies: Reply | dict[str, Any], endpoint: str = "chat") -> None:
        """Script the next answers of ``endpoint`` ("chat" or "embeddings"), first in first out."""
        if endpoint not in self._scripts:
            raise ValueError(f"endpoint must be one of {_ENDPOINTS}, got {endpoint!r}")
        for reply in replies:
            self._scripts[endpoint].append(
                reply if isinstance(reply, Reply) else Reply.model_validate(reply)
            )

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats().model_dump())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _control_config(self, request: web.Request) -> web.Response:
        try:
            self.configure(**await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.config.model_dump())

    async def _control_push(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.push(*body.get("replies", []), endpoint=body.get("endpoint", "chat"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    # -- the request pipeline ------------------------------------------------------------------

    def _record(self, endpoint: str, status: str) -> None:
        by_status = self._stats.requests.setdefault(endpoint, {})
        by_status[status] = by_status.get(status, 0) + 1

    def _fault_count(self, kind: str) -> None:
        self._stats.faults[kind] = self._stats.faults.get(kind, 0) + 1

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        cost: Callable[[dict[str, Any]], int],
        answer: Callable[
            [web.Request, dict[str, Any], Reply | None, dict[str, str]], Awaitable[Any]
        ],
    ) -> web.StreamResponse:
        stats = self._stats
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        status = "500"
        busy = False
        try:
            tenant = self._check_auth(request)
            body = await self._json_body(request)
            known = self.config.models
            if known is not None and body["model"] not in known:
                raise _ApiError(
                    404,
                    f"The model `{str(body['model'])[:100]}` does not exist or you do not have "
                    "access to it.",
                    type_="invalid_request_error",
                    code="model_not_found",
                )
            tokens = cost(body)  # validates the body too
            self._check_in_flight()
            self._busy += 1
            busy = True
            decision = self._limits_for(str(body.get("model")), tenant).admit(tokens)
            if not decision.allowed:  # before taking a scripted reply: a 429 must not eat it
                raise self._rate_limit_error(decision, body, tokens, tenant)
            scripted = self._scripts[endpoint].popleft() if self._scripts[endpoint] else None
            fault = self._draw_fault(scripted)
            await self._delay(scripted)
            if fault is not None:
                raise fault
            if scripted is not None and scripted.status is not None and scripted.status >= 400:
                raise _ApiError(
                    scripted.status,
                    scripted.message or f"scripted error {scripted.status}",
                    type_=scripted.error_type or "server_error",
                    code=scripted.error_code,
                    headers=scripted.headers,
                )
            headers = {**decision.headers, **(scripted.headers if scripted else {})}
            response = await answer(request, body, scripted, headers)
            status = str(response.status)
            return response
        except _ApiError as exc:
            status = str(exc.status)
            return web.json_response(exc.body, status=exc.status, headers=exc.headers)
        except _Fault as exc:
            status = exc.kind
            self._fault_count(exc.kind)
            return await self._apply_fault(request, exc.kind)
        except asyncio.CancelledError:
            status = "cancelled" if status == "500" else status
            raise
        finally:
            stats.in_flight -= 1
            if busy:
                self._busy -= 1
            self._record(endpoint, status)

    def _check_in_flight(self) -> None:
        """``max_in_flight``: a server that counts requests being answered, not a rate."""
        cap = self.config.max_in_flight
        if cap is not None and self._busy >= cap:
            raise _ApiError(
                429,
                f"Too many concurrent requests (at most {cap} at once).",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": "1"} if self.config.retry_after else {},
            )

    def _check_auth(self, request: web.Request) -> str:
        """The request's account: its bearer key when ``tenants`` are set, else ``""``."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise _ApiError(
                401,
                "You didn't provide an API key. Provide it in an Authorization header (Bearer).",
                code="missing_api_key",
            )
        expected = self.config.api_key
        if expected is not None and header[7:] != expected:
            # Like the real API, never echo the key back in full.
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        tenants = self.config.tenants
        if tenants is None:
            return ""
        account = tenants.get(header[7:])
        if account is None:
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        if account.out_of_quota:
            raise _ApiError(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type_="insufficient_quota",
                code="insufficient_quota",
            )
        return header[7:]

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise _ApiError(
                400, f"We could not parse the JSON body of your request: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        return body

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._json_object(request)
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        return body

    def _rate_limit_error(
        self, decision: Any, body: dict[str, Any], tokens: int, tenant: str
    ) -> _ApiError:
        model = body["model"]
        if decision.too_large:
            bucket = self._limits_for(model, tenant).tokens
            limit = bucket.limit if bucket else 0
            message = (
                f"Request too large for {model} on tokens per min (TPM): Limit {limit}, "
                f"Requested {tokens}."
            )
        else:
            message = (
                f"Rate limit reached for {model} on {decision.limited_by} per min. "
                f"Please try again in {decision.retry_after_s:.3f}s."
            )
        return _ApiError(
            429,
            message,
            type_=decision.limited_by or "requests",
            code="rate_limit_exceeded",
            headers=decision.headers,
        )

    def _draw_fault(self, scripted: Reply | None) -> Exception | None:
        if scripted is not None:
            # "cut" is played by the answer itself: it breaks a stream after its first chunk
            return _Fault(scripted.fault) if scripted.fault not in (None, "cut") else None
        cfg = self.config
        draw = self._rng.random()
        for kind, rate in (
            ("500", cfg.error_rate),
            ("503", cfg.unavailable_rate),
            ("hang", cfg.hang_rate),
            ("reset", cfg.reset_rate),
            ("malformed", cfg.malformed_rate),
        ):
            if draw < rate:
                if kind in ("500", "503"):
                    self._fault_count(kind)
                    return _ApiError(
                        int(kind),
                        "The server had an error while processing your request (simulated).",
                        type_="server_error",
                    )
                return _Fault(kind)
            draw -= rate
        return None

    async def _delay(self, scripted: Reply | None) -> None:
        cfg = self.config
        if scripted is not None and scripted.latency_ms is not None:
            seconds = scripted.latency_ms / 1000
        else:
            seconds = (cfg.latency_ms + self._rng.random() * cfg.jitter_ms) / 1000
        slots = self._slot_semaphore()
        if slots is None:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return
        self._queued += 1
        self._stats.peak_queued = max(self._stats.peak_queued, self._queued)
        try:
            await slots.acquire()
        finally:
            self._queued -= 1
        try:
            if seconds > 0:
                await asyncio.sleep(seconds)
        finally:
            slots.release()

    def _slot_semaphore(self) -> asyncio.Semaphore | None:
        """``slots``: the server computes this many requests at once, the rest queue."""
        size = self.config.slots
        if size is None:
            return None
        if self._slots is None or self._slots[0] != size:
            self._slots = (size, asyncio.Semaphore(size))
        return self._slots[1]

    async def _apply_fault(self, request: web.Request, kind: str) -> web.StreamResponse:
        if kind == "hang":
            # Wait until the client gives up (the handler is then cancelled), the server
            # stops, or hang_s passes.
            try:
                async with asyncio.timeout(self.config.hang_s):
                    await self._closing.wait()
            except TimeoutError:
                pass
            error = _ApiError(504, "simulated hang ended", type_="server_error")
            return web.json_response(error.body, status=504)
        if kind == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        return web.Response(
            status=200,
            text='{"id": "chatcmpl-broken", "choices": [',
            content_type="application/json",
        )

    # -- chat ----------------------------------------------------------------------------------

    def _chat_cost(self, body: dict[str, Any]) -> int:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "[] is too short - 'messages'", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in {
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
                "function",
            }:
                raise _ApiError(400, f"Invalid value for 'messages[{i}].role'.", param="messages")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
        prompt = chat_prompt_tokens(body)
        body["_prompt_tokens"] = prompt
        return prompt + (max_tokens or self.config.completion_tokens)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat", self._chat_cost, self._chat_answer)

    async def _chat_answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        scripted: Reply | None,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        model = body["model"]
        messages = body["messages"]
        text = _content.last_user_text(messages)[:60] or "example"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        tool_calls: list[dict[str, Any]] = []
        content: str | None
        if scripted is not None and (scripted.content is not None or scripted.tool_calls):
            content = scripted.content
            for call in scripted.tool_calls or []:
                tool_calls.append({"name": call.name, "arguments": json.dumps(call.arguments)})
        elif (tool := _content.chosen_tool(body)) is not None:
            content = None
            args = _content.json_from_schema(
                tool.get("parameters") or {},
                text=text,
                hints=_content.Hints(_content.last_user_text(messages)),
            )
            tool_calls.append({"name": tool.get("name", "tool"), "arguments": json.dumps(args)})
        else:
            content = _content.structured_content(
                body.get("response_format") or {}, text, _content.all_text(messages)
            )
            if content is None:
                content = _content.default_answer(messages, self.config.completion_tokens)
                content, _ = truncate(content, self.config.completion_tokens, model)
        finish = "tool_calls" if tool_calls else "stop"
        if limit is not None and content is not None and not tool_calls:
            content, cut = truncate(content, limit, model)
            finish = "length" if cut else finish
        completion = text_tokens(content or "", model) + sum(
            text_tokens(c["name"] + c["arguments"], model) for c in tool_calls
        )
        usage = {
            "prompt_tokens": body["_prompt_tokens"],
            "completion_tokens": completion,
            "total_tokens": body["_prompt_tokens"] + completion,
        }
        self._stats.prompt_tokens += usage["prompt_tokens"]
        self._stats.completion_tokens += completion
        per_token = self.config.per_token_ms / 1000
        calls = [
            {"id": f"call_sim_{next(self._ids)}", "type": "function", "function": call}
            for call in tool_calls
        ]
        ident = f"chatcmpl-sim-{next(self._ids)}"
        created = int(time.time())
        cut = scripted is not None and scripted.fault == "cut"
        if cut:
            self._fault_count("cut")
        if body.get("stream"):
            return await self._stream_chat(
                request, body, ident, created, content, calls, finish, usage, headers, cut
            )
        if cut:
            return await self._apply_fault(request, "reset")
        if per_token:
            await asyncio.sleep(per_token * completion)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices = [
            {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
            for i in range(int(body.get("n") or 1))
        ]
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": "fp_rat_sim",
        }
        return web.json_response(payload, headers=headers)

    async def _stream_chat(
        self,
        request: web.Request,
        body: dict[str, Any],
        ident: str,
        created: int,
        content: str | None,
        calls: list[dict[str, Any]],
        finish: str,
        usage: dict[str, int],
        headers: dict[str, str],
        cut: bool = False,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={**headers, "Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        base = {"id": ident, "object": "chat.completion.chunk", "created": created}
        base["model"] = body["model"]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {**base, "choices": choices, **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def delta(
            payload: dict[str, Any], finish_reason: str | None = None
        ) -> list[dict[str, Any]]:
            return [
                {"index": 0, "delta": payload, "finish_reason": finish_reason, "logprobs": None}
            ]

        await send(delta({"role": "assistant", "content": "" if content is not None else None}))
        pieces = (content or "").split(" ")
        per_piece = (
            self.config.per_token_ms / 1000 * usage["completion_tokens"] / max(1, len(pieces))
        )
        for i, piece in enumerate(pieces if content else []):
            if per_piece:
                await asyncio.sleep(per_piece)
            await send(delta({"content": piece if i == 0 else " " + piece}))
            if cut:
                if request.transport is not None:
                    request.transport.abort()
                return response
        if calls:
            await send(
                delta({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
            )
        await send(delta({}, finish))
        if include_usage:
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- embeddings ----------------------------------------------------------------------------

    def _embedding_inputs(self, body: dict[str, Any]) -> list[str]:
        raw = body.get("input")
        if raw is None:
            raise _ApiError(400, "you must provide an input parameter", param="input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise _ApiError(400, "'$.input' is invalid: it must not be empty.", param="input")
        if len(raw) > MAX_EMBEDDING_INPUTS:
            raise _ApiError(
                400,
                f"'$.input' is too long: {len(raw)} inputs, "
                f"at most {MAX_EMBEDDING_INPUTS} per request.",
                param="input",
            )
        texts: list[str] = []
        marker = self.config.invalid_marker
        for i, item in enumerate(raw):
            if isinstance(item, str) and item:
                if marker and marker in item:
                    raise _ApiError(
                        400, f"'$.input[{i}]' is invalid: the input was rejected.", param="input"
                    )
                texts.append(item)
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                texts.append(" ".join(f"tok{t}" for t in item))
            else:
                raise _ApiError(
                    400, f"'$.input[{i}]' is invalid: expected a non-empty string.", param="input"
                )
        return texts

    def _embedding_cost(self, body: dict[str, Any]) -> int:
        texts = self._embedding_inputs(body)
        raw = body["input"]
        items = raw if isinstance(raw, list) and not (raw and isinstance(raw[0], int)) else [raw]
        tokens = sum(
            len(item) if isinstance(item, list) else text_tokens(item, body["model"])
            for item in items
        )
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise _ApiError(400, f"Invalid encoding_format {fmt!r}.", param="encoding_format")
        dims = body.get("dimensions")
        native = _NATIVE_DIMENSIONS.get(body["model"])
        if dims is not None:
            if body["model"] == "text-embedding-ada-002":
                raise _ApiError(
                    400, "This model does not support specifying dimensions.", param="dimensions"
                )
            if not isinstance(dims, int) or dims < 1 or (native is not None and dims > native):
                raise _ApiError(400, f"Invalid 'dimensions': {dims!r}.", param="dimensions")
        body["_texts"] = texts
        body["_tokens"] = tokens
        return tokens

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(
            request, "embeddings", self._embedding_cost, self._embedding_answer
        )

    async def _embedding_answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        scripted: Reply | None,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        texts: list[str] = body["_texts"]
        dims = self._dimensions(body)
        if scripted is not None and scripted.vectors is not None:
            vectors = [
                np.array([np.nan if v is None else v for v in vec], dtype=np.float32)
                for vec in scripted.vectors
            ]
        else:
            vectors = [_content.embed(text, dims) for text in texts]
        self._stats.embedding_inputs += len(texts)
        self._stats.prompt_tokens += body["_tokens"]
        usage = {"prompt_tokens": body["_tokens"], "total_tokens": body["_tokens"]}
        if body.get("encoding_format") == "base64":
            return web.Response(
                body=_base64_embeddings_json(vectors, body["model"], usage),
                content_type="application/json",
                headers=headers,
            )
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [None if not np.isfinite(x) else float(x) for x in vec],
            }
            for i, vec in enumerate(vectors)
        ]
        payload = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return web.json_response(payload, headers=headers)

    # -- files and batches (sim/_batches.py) ----------------------------------------------------

    def _new_batches(self) -> Batches:
        def cost(body: dict[str, Any]) -> tuple[int, int]:
            try:
                tokens = self._embedding_cost(body)
            except _ApiError as exc:
                raise BatchError(exc.status, str(exc)) from exc
            return tokens, len(body["_texts"])

        def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            try:
                self._embedding_cost(body)
            except _ApiError as exc:
                return exc.status, exc.body
            vectors = [_content.embed(text, self._dimensions(body)) for text in body["_texts"]]
            self._stats.embedding_inputs += len(vectors)
            self._stats.batch_inputs += len(vectors)
            self._stats.prompt_tokens += body["_tokens"]
            base64_format = body.get("encoding_format") == "base64"
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(vec.astype("<f4").tobytes()).decode()
                    if base64_format
                    else [float(x) for x in vec],
                }
                for i, vec in enumerate(vectors)
            ]
            usage = {"prompt_tokens": body["_tokens"], "total_tokens": body["_tokens"]}
            return 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}

        return Batches(self._clock, lambda: self.config, lambda: self._rng, cost, answer)

    def _dimensions(self, body: dict[str, Any]) -> int:
        """The vector size an embedding request asks for, or the model's own."""
        dims = body.get("dimensions") or _NATIVE_DIMENSIONS.get(
            body["model"], self.config.embedding_dimensions
        )
        return int(dims)

    async def _batch_api(
        self, request: web.Request, endpoint: str, call: Callable[[], Awaitable[Any]]
    ) -> web.StreamResponse:
        """One Files/Batch API request: authenticated, counted, errors in OpenAI's shape."""
        status = "500"
        try:
            self._check_auth(request)
            result = await call()
            status = "200"
            if isinstance(result, bytes):
                return web.Response(body=result, content_type="application/octet-stream")
            return web.json_response(result)
        except _ApiError as exc:
            status = str(exc.status)
            return web.json_response(exc.body, status=exc.status, headers=exc.headers)
        except BatchError as exc:
            status = str(exc.status)
            error = _ApiError(exc.status, str(exc), param=exc.param)
            return web.json_response(error.body, status=exc.status)
        finally:
            self._record(endpoint, status)

    async def _file_upload(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            fields: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: nothing OpenAI's upload sends
                if part.name == "file":
                    fields["filename"] = part.filename or "upload.jsonl"
                    fields["data"] = await part.read()
                elif part.name == "purpose":
                    fields["purpose"] = (await part.read()).decode()
            if "data" not in fields:
                raise BatchError(400, "No file in the upload.", "file")
            return self.batches.upload(
                fields["filename"], fields.get("purpose", ""), bytes(fields["data"])
            )

        return await self._batch_api(request, "files", call)

    async def _file_get(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            return self.batches.file(request.match_info["id"])

        return await self._batch_api(request, "files", call)

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]

        async def call() -> Any:
            return self.batches.content(file_id)

        if self.config.batch_output_fault == "stalled" and self.batches.is_output(file_id):
            return await self._stalled(request, self.batches.content(file_id))
        return await self._batch_api(request, "files", call)

    async def _stalled(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """An output file's first half, then nothing more while the client stays (at most a
        minute): a download that neither ends nor grows."""
        self._check_auth(request)
        self._record("files", "200")
        response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        for _ in range(1200):
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return response

    async def _file_delete(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            return self.batches.delete(request.match_info["id"])

        return await self._batch_api(request, "files", call)

    async def _batch_create(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            body = await self._json_object(request)
            created = self.batches.create(body)
            self._stats.batches_created += 1
            return created

        return await self._batch_api(request, "batches", call)

    async def _batch_get(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            return self.batches.retrieve(request.match_info["id"])

        return await self._batch_api(request, "batches", call)

    async def _batch_cancel(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            return self.batches.cancel(request.match_info["id"])

        return await self._batch_api(request, "batches", call)

    async def _batch_list(self, request: web.Request) -> web.StreamResponse:
        async def call() -> Any:
            try:
                limit = int(request.query.get("limit", "20"))
            except ValueError as exc:
                raise BatchError(400, "limit must be an integer", "limit") from exc
            return self.batches.list(limit, request.query.get("after"))

        return await self._batch_api(request, "batches", call)

    # -- models --------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "rat-sim"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})


def _base64_embeddings_json(vectors: list[np.ndarray], model: str, usage: dict[str, int]) -> bytes:
    """The embeddings answer written as bytes. Why: ``json.dumps`` scans every character of
    the base64 strings for escapes (none can occur), which made it two thirds of the
    simulator's CPU per embedding request; on a shared machine that CPU is taken from the client
    being measured."""
    parts = [b'{"object":"list","data":[']
    for i, vec in enumerate(vectors):
        if i:
            parts.append(b",")
        parts.append(b'{"object":"embedding","index":%d,"embedding":"' % i)
        parts.append(base64.b64encode(vec.astype("<f4").tobytes()))
        parts.append(b'"}')
    tail = {"model": model, "usage": usage}
    parts.append(b"]," + json.dumps(tail).encode()[1:])
    return b"".join(parts)
