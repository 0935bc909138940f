"""rat_langchain: pooled, rate-limited, resilient OpenAI calls for LangChain.

The public API, in one place. Everything else is private or lives in a documented submodule
(``rat_langchain.sim`` for the simulator).
"""

from __future__ import annotations

from rat_langchain.client import ClientPool
from rat_langchain.config import RatConfig
from rat_langchain.errors import ConfigError, PoolClosedError, RatError
from rat_langchain.sim import Simulator, SimulatorProcess, SimulatorThread

__all__ = [
    "ClientPool",
    "ConfigError",
    "PoolClosedError",
    "RatConfig",
    "RatError",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
]
__version__ = "0.1.0"
