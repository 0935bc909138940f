"""An OpenAI-compatible simulator: real HTTP on loopback, latency, RPM/TPM limits, faults."""

from __future__ import annotations

from rat_langchain.sim._limits import format_reset
from rat_langchain.sim._model import Reply, SimConfig, SimStats, Tenant, ToolCallReply
from rat_langchain.sim._runners import (
    READY_PREFIX,
    SimulatorProcess,
    SimulatorThread,
    endpoint_or_simulator,
)
from rat_langchain.sim._server import MAX_EMBEDDING_INPUTS, Simulator

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "READY_PREFIX",
    "Reply",
    "SimConfig",
    "SimStats",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "Tenant",
    "ToolCallReply",
    "endpoint_or_simulator",
    "format_reset",
]
