"""The simulator's settings and counters, as pydantic data so they cross process boundaries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Tenant(BaseModel):
    """One API key's account (``SimConfig.tenants``): its own limits, or out of credit."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, gt=0, description="This key's requests per minute.")
    tpm: int | None = Field(None, gt=0, description="This key's tokens per minute.")
    out_of_quota: bool = Field(
        False, description="Every request is a 429 insufficient_quota (no credit left)."
    )


class SimConfig(BaseModel):
    """How the simulated endpoint behaves. Every field can be changed while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: float = Field(0.0, ge=0, description="Base latency added to every response.")
    jitter_ms: float = Field(0.0, ge=0, description="Uniform random extra latency, 0..jitter_ms.")
    per_token_ms: float = Field(0.0, ge=0, description="Extra latency per completion token.")
    rpm: int | None = Field(None, gt=0, description="Requests per minute; None is unlimited.")
    tpm: int | None = Field(None, gt=0, description="Tokens per minute; None is unlimited.")
    limit_window_s: float = Field(
        60.0,
        gt=0,
        le=60,
        description="Burst the limits allow: this many seconds' worth. OpenAI may enforce a "
        "per-minute limit over shorter periods (600 RPM as 10 per second = 1 s).",
    )
    limit_style: Literal["bucket", "fixed_window"] = Field(
        "bucket",
        description="bucket: refills continuously (OpenAI); fixed_window: a count per window of "
        "limit_window_s seconds that resets at each window's end (Azure's 1 s or 10 s windows).",
    )
    limit_headers: Literal["openai", "azure", "none"] = Field(
        "openai",
        description="Rate-limit headers sent: openai (limit, remaining, Go-duration reset, "
        "retry-after and retry-after-ms), azure (remaining of the window, reset and retry-after "
        "in integer seconds, no limit), none (a gateway or vLLM that says nothing).",
    )
    retry_after: bool = Field(True, description="Whether a 429 says how long to wait.")
    batch_completion_s: float = Field(
        2.0, ge=0, description="Seconds a Batch API batch takes from creation to completion."
    )
    batch_line_failure_rate: float = Field(
        0.0, ge=0, le=1, description="Share of a batch's requests that fail (500, error file)."
    )
    batch_expire_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of batches that expire with half their requests undone.",
    )
    batch_output_fault: (
        Literal["duplicate_lines", "mixed_sizes", "bad_file_id", "huge_line", "endless", "stalled"]
        | None
    ) = Field(
        None,
        description="A damaged output file: every answer twice (duplicate_lines), every "
        "other request answered with vectors one dimension short (mixed_sizes), an output "
        "file id that is not an id ('..', bad_file_id), a first line with 2,000,000 floats "
        "(huge_line), a file that goes on far past its requests (endless), or a download "
        "that sends half the file and then nothing more (stalled).",
    )
    batch_enqueued_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens of unfinished batches allowed per model; a batch over it fails "
        "with token_limit_exceeded. None is unlimited.",
    )
    max_in_flight: int | None = Field(
        None,
        gt=0,
        description="Requests answered at once; one more is a 429 with no rate-limit headers "
        "(a gateway's or a self-hosted model's queue). None is unlimited.",
    )
    slots: int | None = Field(
        None,
        gt=0,
        description="Requests computed at once, as a local model server (vLLM's max_num_seqs, "
        "Ollama's OLLAMA_NUM_PARALLEL): the rest wait first in, first out, so their latency "
        "grows; nothing is refused. None is unlimited.",
    )
    announced_rpm: int | None = Field(
        None,
        gt=0,
        description="The requests per minute the headers announce instead of the enforced rpm "
        "(an organisation's limit in the headers where a project's lower one applies); "
        "remaining is this less what the window has used. None: the enforced limit.",
    )
    announced_tpm: int | None = Field(
        None, gt=0, description="The tokens per minute announced instead of tpm; see announced_rpm."
    )
    lying_headers: bool = Field(
        False,
        description="Headers that lie: a remaining of -10^9 on every answer and a retry-after "
        "of 100000 s on every 429 (what a client must survive).",
    )
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests answered 500.")
    unavailable_rate: float = Field(0.0, ge=0, le=1, description="Share answered 503.")
    hang_rate: float = Field(0.0, ge=0, le=1, description="Share that never answer.")
    reset_rate: float = Field(0.0, ge=0, le=1, description="Share whose connection is reset.")
    malformed_rate: float = Field(0.0, ge=0, le=1, description="Share answered 200 with bad JSON.")
    hang_s: float = Field(600.0, gt=0, description="How long a hanging request waits at most.")
    completion_tokens: int = Field(
        24, ge=1, description="Length of the default chat answer when max_tokens allows it."
    )
    embedding_dimensions: int = Field(1536, ge=1, description="Vector size when not requested.")
    api_key: str | None = Field(
        None, description="If set, requests must carry exactly this bearer key (else 401)."
    )
    models: list[str] | None = Field(
        None,
        description="The models this server knows; any other is a 404 model_not_found, as "
        "OpenAI answers (a typo such as gpt-4o-mnii is caught offline). None: any name.",
    )
    tenants: dict[str, Tenant] | None = Field(
        None,
        description="Accounts by bearer key, each with its own limits (as OpenAI keeps one "
        "quota per organisation); a key not listed is a 401. None: one account for every key.",
    )
    seed: int | None = Field(None, description="Seeds the fault and jitter draws.")
    invalid_marker: str | None = Field(
        None,
        description="An embedding input containing this text gets the whole request a 400, as "
        "the real API rejects a batch for one bad input.",
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> SimConfig:
        total = (
            self.error_rate
            + self.unavailable_rate
            + self.hang_rate
            + self.reset_rate
            + self.malformed_rate
        )
        if total > 1.0:
            raise ValueError(f"the fault rates add up to {total:g}; their sum must be at most 1")
        return self


class SimStats(BaseModel):
    """Exact counters of what the simulator saw. ``requests`` is keyed by endpoint then status."""

    requests: dict[str, dict[str, int]] = Field(default_factory=dict)
    connections_opened: int = 0
    connections_open: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    peak_queued: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedding_inputs: int = 0
    batch_inputs: int = 0  # embedding inputs answered through the Batch API
    batches_created: int = 0
    faults: dict[str, int] = Field(default_factory=dict)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Requests answered, optionally only for one endpoint and/or one status code."""
        total = 0
        for name, by_status in self.requests.items():
            if endpoint is not None and name != endpoint:
                continue
            for code, n in by_status.items():
                if status is None or code == str(status):
                    total += n
        return total

    @property
    def total_requests(self) -> int:
        return self.count()

    @property
    def connection_reuse(self) -> float:
        """1 - connections opened / requests sent: the share of requests that rode a warm socket."""
        total = self.total_requests
        return 0.0 if total == 0 else max(0.0, 1.0 - self.connections_opened / total)


class ToolCallReply(BaseModel):
    """One tool call a scripted chat reply makes; ``arguments`` is sent JSON-encoded."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, object] = Field(default_factory=dict)


class Reply(BaseModel):
    """A scripted answer for the next request to an endpoint (see ``Simulator.push``).

    Leave everything unset for the default answer; set ``status`` for an error response,
    ``fault`` for a transport fault (``cut``: a stream that breaks after its first chunk),
    ``content``/``tool_calls`` for a chat answer, ``vectors`` to make the embeddings endpoint
    return exactly these (even invalid) vectors.
    """

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[ToolCallReply] | None = None
    vectors: list[list[float | None]] | None = None
    status: int | None = Field(None, ge=100, le=599)
    error_type: str | None = None
    error_code: str | None = None
    message: str | None = None
    fault: str | None = Field(None, pattern="^(hang|reset|malformed|cut)$")
    headers: dict[str, str] = Field(default_factory=dict)
    latency_ms: float | None = Field(None, ge=0)
