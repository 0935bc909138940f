"""RatConfig: the ``performance:`` section of ``config.yaml`` (one block per optimisation) plus the
endpoint, as a validated pydantic model.

Why pydantic with ``extra="forbid"``: a misspelt key in YAML is otherwise silently ignored and the
optimisation the user thinks they tuned runs with its default. Every error names its key path.

Precedence, lowest first: defaults, the file or dict, then ``RAT_…`` environment variables, where
``__`` separates levels: ``RAT_PERFORMANCE__RATE_LIMITING__RPM_LIMIT=600``.

Size: ~540 lines of small pydantic models, one per block of ``config.yaml``, with the loader;
they form one tree that a reader follows top to bottom, and tools/config_docs.py renders it
whole into docs/configuration.md.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rat_langchain.errors import ConfigError, shorten

__all__ = [
    "NO_KEY",
    "BackgroundTasksConfig",
    "BatchEmbeddingsConfig",
    "CachingConfig",
    "CircuitBreakerConfig",
    "ConnectionPoolingConfig",
    "EndpointConfig",
    "KeysConfig",
    "ModelRateLimit",
    "ParallelExecutionConfig",
    "PerformanceConfig",
    "RatConfig",
    "RateLimitingConfig",
    "RetriesConfig",
]

ENV_PREFIX = "RAT_"


class _Section(BaseModel):
    # allow_inf_nan: an infinite timeout is not "none" (null is); a NaN limit is nothing at all
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """A number is written as a number: ``rpm_limit: true`` is a mistake, not 1, and
        ``max_connections: '50'`` (quoted, or a string from code) is a mistake too, which
        pydantic's lax mode would turn into 50 (strict for numbers, as pydantic's strict mode
        is, with one exception: ``RAT_…`` environment variables are text by nature)."""
        if info.field_name is None or not isinstance(value, bool | str):
            return value
        annotation = cls.model_fields[info.field_name].annotation
        kinds = {
            get_args(kind)[0] if get_origin(kind) is Annotated else kind
            for kind in (get_args(annotation) or (annotation,))
        }
        if not kinds & {int, float}:
            return value
        if isinstance(value, bool) and bool not in kinds:
            raise ValueError(f"expected a number, got the boolean {value!r}")
        words = {word for kind in kinds if get_origin(kind) is Literal for word in get_args(kind)}
        if isinstance(value, str) and not isinstance(value, _EnvText) and value not in words:
            also = "".join(f" or {word!r}" for word in sorted(words))
            raise ValueError(
                f"expected a number{also}, got the string {shorten(value, 40)} (write a number "
                "without quotes)"
            )
        return value


class _EnvText(str):
    """The text of a ``RAT_…`` environment variable: a number field parses it (``"600"`` is
    600), where the same string in YAML or a dict is refused as a quoted number."""

    __slots__ = ()


class ConnectionPoolingConfig(_Section):
    """One pooled HTTP transport per endpoint and event loop, shared by every model object."""

    enabled: bool = Field(True, description="Share one pooled client per endpoint.")
    transport: Literal["auto", "sdk", "aiohttp", "httpx"] = Field(
        "auto",
        description="HTTP transport under the openai SDK. auto = aiohttp, the fastest measured "
        "(docs/benchmarks.md); sdk = openai's own httpx2 transport; httpx = a plain "
        "httpx.AsyncClient (measured slowest, kept for comparison).",
    )
    max_connections: int = Field(
        1000,
        gt=0,
        description="Most TCP connections of the pool, per event loop. 1000, the openai SDK's "
        "own: a bound that protects the client, never a throughput cap below what a plain "
        "ChatOpenAI sends (a batching server such as vLLM answers more per round the more is "
        "in flight).",
    )
    max_keepalive_connections: int | None = Field(
        None,
        gt=0,
        description="Idle connections kept open. None = max_connections: a smaller value closes "
        "and reopens sockets under load, which defeats the pool.",
    )
    keepalive_expiry_s: float = Field(60.0, gt=0, description="Idle time before a socket closes.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + TLS connect timeout.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="Timeout of one HTTP request (never None: a hung call must end)."
    )

    @model_validator(mode="after")
    def _keepalive_fits(self) -> Self:
        if (
            self.max_keepalive_connections is not None
            and self.max_keepalive_connections > self.max_connections
        ):
            raise ValueError(
                "max_keepalive_connections must not exceed max_connections "
                f"({self.max_keepalive_connections} > {self.max_connections})"
            )
        return self

    @property
    def keepalive(self) -> int:
        return self.max_keepalive_connections or self.max_connections


# A limit is a number (a ceiling) or "auto": learned from the server's headers.
Limit = Annotated[int, Field(gt=0)] | Literal["auto"]


class ModelRateLimit(_Section):
    """Limits for one model, overriding the defaults of its API."""

    rpm_limit: Limit | None = Field(
        None, description="Requests per minute (a ceiling, or auto); None: as rate_limiting."
    )
    tpm_limit: Limit | None = Field(
        None, description="Tokens per minute (a ceiling, or auto); None: as rate_limiting."
    )


class RateLimitingConfig(_Section):
    """Client-side token buckets, so requests wait locally instead of being answered 429."""

    enabled: bool = Field(True, description="Throttle requests before they are sent.")
    rpm_limit: Limit = Field(
        "auto",
        description="Requests per minute per API and model. auto: learned from the server's "
        "x-ratelimit-limit-requests, up as well as down; until it says, no rate: 10 requests "
        "in flight before the first answer, a window that slow-starts from there (backend: "
        "redis starts at 500 RPM instead); where it never says, found from its 429s (CUBIC; "
        "docs/resilience.md); a number is a ceiling the server's limit can only lower.",
    )
    tpm_limit: Limit = Field(
        "auto",
        description="Tokens per minute per API and model. auto: learned from the server's "
        "x-ratelimit-limit-tokens (the tighter project limit where it sends one); 200000 "
        "until the first answer; where the server never says, not applied until it refuses, "
        "then found from its 429s; a number is a ceiling.",
    )
    safety_margin: float = Field(
        0.9, gt=0, le=1, description="Share of the limits actually used, to absorb clock skew."
    )
    burst_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Burst allowed: this many seconds' worth of the limits. 1 by default: "
        "servers may enforce a per-minute limit per second (OpenAI quantises, Azure checks 1 s "
        "or 10 s windows), and a full minute's burst there is answered with 429s (measured: "
        "31% of responses at 600 RPM per second, 0% with 1 s; docs/benchmarks.md). With limits "
        "on auto it widens by itself when the server shows room; raise it (up to 60) for a "
        "server known to allow a minute's burst.",
    )
    first_hold_s: float = Field(
        5.0,
        ge=0,
        description="After the first burst, refill waits for the server's first answer (at "
        "most this long), so what refills meanwhile does not land on top of it; 0 = off.",
    )
    per_model: dict[str, ModelRateLimit] = Field(
        default_factory=dict, description="Overrides by model name."
    )
    max_queue: int | None = Field(
        None,
        gt=0,
        description="Backpressure: callers allowed to wait per API and model; past it a "
        "caller gets BackpressureError at once. None = unbounded.",
    )
    max_queue_wait_s: float | None = Field(
        None,
        gt=0,
        description="Backpressure: a caller whose expected wait is longer gets "
        "BackpressureError at once. None = wait as long as it takes.",
    )
    remember: bool = Field(
        True,
        description="Start from what the last run learned for the same endpoint, model and API "
        "key (a fingerprint, never the key): limits on auto, saved when the pool closes "
        "(docs/resilience.md). Local backend only: Redis shares what is learned already.",
    )
    remember_path: str | None = Field(
        None,
        description="The file learned limits are kept in; None = learned_limits.json in the "
        "user cache dir (~/.cache/rat_langchain on Linux).",
    )
    remember_for_s: float = Field(
        86_400.0, gt=0, description="A remembered limit older than this is forgotten."
    )
    backend: Literal["local", "redis"] = Field(
        "local",
        description="Where the buckets live: this process, or Redis (one budget shared by "
        "every process using it).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for backend: redis (and circuit_breaker.share_open_state).",
    )
    redis_failure: Literal["degrade", "fail_closed"] = Field(
        "degrade",
        description="When Redis is unreachable: degrade to local buckets (with a warning), "
        "or fail_closed (RateLimiterUnavailable).",
    )


class CircuitBreakerConfig(_Section):
    """Fail fast while an endpoint is unhealthy (Resilience4j's contract)."""

    enabled: bool = Field(True, description="Guard calls with a circuit breaker.")
    window_size: int = Field(50, gt=0, description="Calls in the sliding window.")
    minimum_calls: int = Field(20, gt=0, description="Calls before the failure rate counts.")
    failure_rate_threshold: float = Field(
        0.5, gt=0, le=1, description="Failure share that opens the circuit."
    )
    slow_call_rate_threshold: float = Field(
        1.0, gt=0, le=1, description="Slow-call share that opens the circuit."
    )
    slow_call_duration_s: float = Field(60.0, gt=0, description="A call slower than this is slow.")
    consecutive_failures: int = Field(
        10, gt=0, description="This many failures in a row open the circuit."
    )
    wait_s: float = Field(5.0, gt=0, description="Open time before the first probe.")
    max_wait_s: float = Field(60.0, gt=0, description="Cap on the open time as it grows.")
    half_open_permits: int = Field(2, gt=0, description="Probe calls allowed while half-open.")
    share_open_state: bool = Field(
        False,
        description="Publish an opening through Redis (rate_limiting.redis_url), so every "
        "process fails fast once one has tripped.",
    )

    @model_validator(mode="after")
    def _wait_fits(self) -> Self:
        if self.max_wait_s < self.wait_s:
            raise ValueError(f"max_wait_s ({self.max_wait_s}) must be >= wait_s ({self.wait_s})")
        return self


class RetriesConfig(_Section):
    """Retries of transient failures (429, 408, 5xx, timeouts, connection errors)."""

    enabled: bool = Field(True, description="Retry transient failures.")
    max_attempts: int = Field(
        4,
        gt=0,
        description="Attempts in all, the first included (429s a rate limiter holds go on "
        "being retried for up to max_server_wait_s from the first).",
    )
    initial_backoff_s: float = Field(0.5, gt=0, description="First backoff (full jitter).")
    max_backoff_s: float = Field(20.0, gt=0, description="Cap on one backoff.")
    max_server_wait_s: float = Field(
        60.0, gt=0, description="Cap on a wait the server asks for (Retry-After)."
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Deadline of one call, retries included; None = only the HTTP timeout.",
    )


class ParallelExecutionConfig(_Section):
    """Run independent plan steps and LLM calls concurrently."""

    enabled: bool = Field(True, description="Run independent plan steps concurrently.")
    max_parallel_steps: int = Field(8, gt=0, description="Plan steps running at once.")
    max_parallel_llm_calls: int = Field(
        1000,
        gt=0,
        description="LLM calls in flight at once, per process (default: the connection pool "
        "size, itself the SDK's). A server that refuses by concurrency gets a lower limit "
        "learned from its 429s.",
    )
    dependency_analysis: bool = Field(
        True,
        description="Infer dependencies from $stepN references in step arguments "
        "(false: references must be listed in dependencies, else PlanError).",
    )
    max_replans: int = Field(
        2,
        ge=0,
        le=20,
        description="Replans an Orchestrator with a joiner may make for one request (within a "
        "round and after one); then the joiner answers from what there is.",
    )
    replan: Literal["partial", "full"] = Field(
        "partial",
        description="partial: keep the steps that succeeded and passed verification, plan only "
        "what failed or was refuted, and start it while the rest still runs; full: plan the "
        "whole request again after the round (LLMCompiler).",
    )
    step_max_attempts: int = Field(
        1,
        ge=1,
        description="Attempts per tool step on transient failures (timeouts, connection errors, "
        "429/5xx), with the retries section's backoff; above 1 only for idempotent tools.",
    )


class BatchEmbeddingsConfig(_Section):
    """Embed many texts per request and several requests at once."""

    enabled: bool = Field(
        True,
        description="Batch embedding requests; false = one text per request, one request at "
        "a time (the unbatched baseline, to measure what batching gives).",
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        le=2048,
        description="Texts per request (API max 2048). None: sized from the limits learned "
        "for the endpoint, so that the requests-per-minute limit binds no earlier than the "
        "tokens-per-minute one (from 100 texts up to 2048); with none known yet, a call's "
        "texts spread over max_concurrent_batches requests (100 to 1000 texts each).",
    )
    max_concurrent_batches: int = Field(
        16,
        gt=0,
        description="Embedding requests in flight (overlaps latency; the limiter bounds the rate).",
    )
    coalesce: bool = Field(
        True,
        description="Concurrent calls for one endpoint, model and size share requests when "
        "they would wait anyway (for the limiter or a free slot): a served app's embedding "
        "rate is then bound by tokens per minute, not requests. No added latency alone.",
    )

    @property
    def texts_per_request(self) -> int | None:
        """``batch_size`` (None: sized per call), or 1 with batching switched off."""
        return self.batch_size if self.enabled else 1

    @property
    def requests_in_flight(self) -> int:
        """``max_concurrent_batches``, or 1 with batching switched off."""
        return self.max_concurrent_batches if self.enabled else 1


class CachingConfig(_Section):
    """Caches of work that does not change between calls."""

    tool_catalog: bool = Field(True, description="Render tool descriptions once per tool set.")
    embeddings: bool = Field(
        False,
        description="Keep embeddings on disk (SQLite), keyed by model, dimensions and text, "
        "so unchanged texts are never embedded twice.",
    )
    embedding_cache_path: str = Field(
        ".rat_cache/embeddings.sqlite3", description="Where the embedding cache lives."
    )


class BackgroundTasksConfig(_Section):
    """Work moved off the critical path (always awaited before results return)."""

    verification: bool = Field(True, description="Verify step results in the background.")


class KeysConfig(_Section):
    """What is kept per (endpoint, model, tenant): limiter state, breaker, metrics series. Model
    names and API keys can be user input; without a bound each new one is kept for ever."""

    max_keys: int = Field(
        1000,
        gt=0,
        description="Keys kept at most. Past it, idle keys are forgotten, least recently used "
        "first, and metrics of further models count under '(other)'; a warning says so.",
    )
    idle_s: float = Field(
        3600.0,
        gt=0,
        description="A key unused this long (give or take a tenth) is forgotten (what it "
        "learned is learned again on its next call). An open breaker is never forgotten.",
    )


class PerformanceConfig(_Section):
    """One block per optimisation; each can be switched off on its own to measure it."""

    connection_pooling: ConnectionPoolingConfig = Field(default_factory=ConnectionPoolingConfig)
    rate_limiting: RateLimitingConfig = Field(default_factory=RateLimitingConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    parallel_execution: ParallelExecutionConfig = Field(default_factory=ParallelExecutionConfig)
    batch_embeddings: BatchEmbeddingsConfig = Field(default_factory=BatchEmbeddingsConfig)
    caching: CachingConfig = Field(default_factory=CachingConfig)
    background_tasks: BackgroundTasksConfig = Field(default_factory=BackgroundTasksConfig)
    keys: KeysConfig = Field(default_factory=KeysConfig)


# The API key sent when none is set and the host is not OpenAI's: local servers (Ollama, vLLM,
# LM Studio, llama.cpp) need none, but the SDK sends one (llama.cpp's documentation uses this).
NO_KEY = "sk-no-key-required"


class EndpointConfig(_Section):
    """Where requests go. Unset values fall back to OPENAI_BASE_URL / OPENAI_API_KEY."""

    base_url: str | None = Field(None, description="OpenAI-compatible base URL, ending in /v1.")
    api_key: SecretStr | None = Field(
        None, description="API key; prefer the OPENAI_API_KEY environment variable."
    )
    organization: str | None = Field(None, description="OpenAI organization id.")
    chat_model: str = Field("gpt-4o-mini", description="Default chat model.")
    embedding_model: str = Field("text-embedding-3-small", description="Default embedding model.")


class RatConfig(_Section):
    """Everything rat_langchain reads from ``config.yaml``.

    Example::

        config = RatConfig.load("config.yaml")         # file + RAT_… environment overrides
        config = RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": 600}}})
        config.performance.rate_limiting.rpm_limit     # 600
    """

    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
    ) -> RatConfig:
        """Validate ``data``, then apply ``RAT_…`` variables from ``env`` (default os.environ)."""
        variables = os.environ if env is None else env
        merged = _merge(copy.deepcopy(dict(data or {})), _env_overrides(variables))
        _drop_retired(merged)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_named_variables(_key_errors(exc), variables)) from None

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
    ) -> RatConfig:
        """Read a YAML file (or nothing, for the defaults) and apply environment overrides."""
        if path is None:
            return cls.from_dict({}, env=env)
        file = Path(path)
        try:
            with file.open("rb") as handle:
                raw = handle.read(_MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            raise ConfigError(
                [(str(file), "file not found")], source="configuration path"
            ) from None
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ConfigError([(str(file), f"larger than {_MAX_CONFIG_BYTES} bytes")])
        try:
            data = _safe_yaml(raw.decode("utf-8"), str(file)) or {}
        except UnicodeDecodeError:
            raise ConfigError([(str(file), "not UTF-8 text")]) from None
        if not isinstance(data, dict):
            raise ConfigError([(str(file), "the top level must be a mapping")])
        try:
            return cls.from_dict(data, env=env)
        except ConfigError as exc:
            raise ConfigError(exc.errors, source=f"configuration in {file}") from None

    def with_endpoint(self, **fields: Any) -> RatConfig:
        """A validated copy whose ``endpoint`` section has ``fields`` changed (LangChain's
        ``with_*`` convention: this object is unchanged). With
        ``rat_langchain.sim.endpoint_or_simulator``: ``config.with_endpoint(**endpoint)``."""
        data = self.model_dump()
        data["endpoint"].update(fields)
        if isinstance(data["endpoint"].get("api_key"), SecretStr):
            data["endpoint"]["api_key"] = data["endpoint"]["api_key"].get_secret_value()
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_key_errors(exc)) from None


_MAX_CONFIG_BYTES = 1024 * 1024
# Values a YAML document may expand to, aliases counted each time they are used: a config is a
# few hundred; an alias bomb ("billion laughs") is billions.
_MAX_YAML_NODES = 100_000


def _safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with alias expansion bounded: the node graph is measured, aliases
    counted as often as they are used, before any Python value is built from it."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > _MAX_YAML_NODES:
            raise ConfigError(
                [(where, f"expands to more than {_MAX_YAML_NODES} values (an alias bomb?)")]
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError([(where, _yaml_problem(exc))]) from None
    except RecursionError:
        raise ConfigError([(where, "not valid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML syntax error as lines a person reads: where, what, and the line with a caret
    (PyYAML's own text, once passed through repr, was one escaped string). Bounded: the
    problem is cut, and PyYAML's snippet is at most a line of the file."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"not valid YAML: {_printable(str(exc))}"
    mark = exc.problem_mark
    text = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: "
    text += _printable(exc.problem or "")
    if exc.context and exc.context_mark is not None:
        where = exc.context_mark
        text += f" ({_printable(exc.context)} at line {where.line + 1}, column {where.column + 1})"
    snippet = mark.get_snippet(indent=4, max_length=75)
    return f"{text}\n{_printable(snippet, keep_lines=True)}" if snippet else text


def _printable(text: str, *, keep_lines: bool = False, limit: int = 300) -> str:
    kept = "\n" if keep_lines else ""
    clean = "".join(c if c.isprintable() or c in kept else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


def _expanded_nodes(root: yaml.Node) -> int:
    """How many values ``root`` stands for once every alias is expanded, computed once per
    distinct node (linear in the document, whatever it expands to); stops past the bound."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()  # nodes whose children are being measured
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in visiting:
            return _MAX_YAML_NODES + 1  # a recursive alias expands without end
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done or not children:
            total = 1 + sum(sizes.get(id(child), 0) for child in children)
            sizes[id(node)] = min(total, _MAX_YAML_NODES + 1)
            visiting.discard(id(node))
            continue
        visiting.add(id(node))
        pending.append((node, True))
        pending.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


# Settings that did nothing and were removed: accepted with a warning, so an existing
# config.yaml keeps loading, and named, so nothing is dropped silently.
_RETIRED = {
    ("performance", "caching", "prompt_templates"): "LangChain compiles its templates itself",
    ("performance", "background_tasks", "memory_updates"): (
        "choose per call: MemoryStore.add_memory (awaited) or add_memory_later (background)"
    ),
}


def _drop_retired(data: dict[str, Any]) -> None:
    for path, why in _RETIRED.items():
        *parents, leaf = path
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            del node[leaf]
            warnings.warn(
                f"{'.'.join(path)} is no longer a setting and is ignored ({why}); "
                "remove it from the configuration",
                DeprecationWarning,
                stacklevel=3,  # the caller of from_dict
            )


def _env_path(name: str) -> list[str] | None:
    """The key path a ``RAT_A__B__C`` variable sets (``["a", "b", "c"]``); None for others."""
    if not name.startswith(ENV_PREFIX) or "__" not in name:
        return None
    return name[len(ENV_PREFIX) :].lower().split("__")


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from ``RAT_A__B__C=value``; values stay strings for pydantic to coerce."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        path = _env_path(name)
        if path is None:
            continue
        node = out
        *parents, leaf = path
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = None if value.lower() in ("null", "none") else _EnvText(value)
    return out


def _named_variables(
    errors: list[tuple[str, str]], env: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Errors of keys set by a ``RAT_…`` variable name the variable: a mistyped
    ``RAT_PERFORMANCE__RATE_LIMITNG__RPM_LIMIT`` was reported as ``performance.rate_limitng:
    unknown key``, which sent users looking through a config.yaml that does not have it."""
    paths = {".".join(parts): name for name in env if (parts := _env_path(name)) is not None}
    named = []
    for path, message in errors:
        found = [v for p, v in paths.items() if p == path or p.startswith(path + ".")]
        if found:
            message += f" (set by the environment variable {', '.join(sorted(found))})"
        named.append((path, message))
    return named


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


_UNION_BRANCH = re.compile(r"[\[\]'\-]|^(int|float|str|bool)$")


def _key_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """One ``(key path, message)`` per key. The branches of a union (``500`` or ``"auto"``)
    are one key: their messages are joined with "or", and pydantic's branch names
    (``constrained-int``, ``literal['auto']``) are left out of the path."""
    messages: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for error in exc.errors():
        parts = [str(p) for p in error["loc"] if not _UNION_BRANCH.search(str(p))]
        path = ".".join(parts) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.yaml)"
        else:
            message = error["msg"].removeprefix("Value error, ")  # our own validators' text
            secret = "api_key" in path  # never echo a secret back, not even a malformed one
            told = error["type"] == "value_error" and ", got " in message
            if "input" in error and not isinstance(error["input"], dict) and not (secret or told):
                shown[path] = f" (got {shorten(error['input'], 80)})"
        messages.setdefault(path, []).append(message)
    return [(path, " or ".join(found) + shown.get(path, "")) for path, found in messages.items()]
