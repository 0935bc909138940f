"""Learned limits remembered across runs: a pool started again begins from what the last run
learned for the same endpoint, model and API-key fingerprint.

Why: every limit left on ``auto`` is learned from the server's answers, and a fresh process
learned it all again. A CLI run, a serverless start or a notebook restart began cold: a window
of ten requests in flight slow-starting, a silent server's rate found again through a burst of
429s. The learner's state after a run is small (a rate per dimension and a window per key), so
it is written to a file under the user's cache dir when the pool closes and read when a key is
first used.

What is kept, and what is not:

- per key, a fingerprint of (endpoint, model, tenant) to match on, the model and the host for
  a reader, the rate of each learned dimension (after the safety margin) and where it came
  from (``announced``, ``cubic``, ``slow_start``), whether a dimension was found unlimited, and
  the learned window of attempts in flight. Never an API key or a URL's credentials, path or
  query: the tenant is already a one-way fingerprint (``guards.key.tenant_of``);
- configured limits are the configuration's, not the file's: a dimension with a number set is
  never seeded, and a remembered rate never goes below the limiter's floors;
- an entry older than ``max_age_s`` (a day by default) is forgotten: tiers change;
- the file is untrusted (another program, an older version, a hand edit): at most
  ``MAX_FILE_BYTES`` are read, every entry is validated, a bad one is skipped, a bad file is
  ignored with a warning, rates and windows are clamped; it is written atomically (a temporary
  file renamed over it), readable by its owner only, merged with what other processes saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rat_langchain.guards.key import Key

__all__ = ["MAX_FILE_BYTES", "LimitMemory", "Remembered", "default_path"]

_log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20  # a file larger than this is not read (10^4 keys fit in ~3 MB... ours)
_MAX_RATE = 1e12  # per minute: past any real server's; a larger remembered value is garbage
_VERSION = 1


class Rate(BaseModel):
    """One dimension's remembered rate."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    per_minute: float = Field(gt=0, le=_MAX_RATE, allow_inf_nan=False)
    source: Literal["announced", "cubic", "slow_start"]


class Window(BaseModel):
    """The learned window of attempts in flight (``limit`` None: off, nothing bounds it)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: float | None = Field(None, ge=1, le=1e6, allow_inf_nan=False)
    slow_start: bool = False


class Remembered(BaseModel):
    """What one key had learned when its pool closed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    host: str = Field("", max_length=300)
    model: str = Field("", max_length=300)
    saved_at: float = Field(allow_inf_nan=False)
    # a dimension: a rate, "unlimited" (the server announces limits and not this one's), or
    # None (nothing learned worth keeping: still open, or configured)
    requests: Rate | Literal["unlimited"] | None = None
    tokens: Rate | Literal["unlimited"] | None = None
    window: Window | None = None


def default_path() -> Path:
    """``learned_limits.json`` in the user's cache dir (``platformdirs``: ``~/.cache/
    rat_langchain`` on Linux, ``$XDG_CACHE_HOME`` if set)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("rat_langchain")) / "learned_limits.json"


def fingerprint(key: Key) -> str:
    """The id a key is remembered by: the endpoint's full URL is in it, not in the file."""
    raw = "\x00".join((key.endpoint, key.model, key.tenant)).encode()
    return hashlib.blake2b(raw, digest_size=16, person=b"rat-limits").hexdigest()


def _host(endpoint: str) -> str:
    """Who the entry is for, to a reader of the file: host and port, nothing else."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return ""


class LimitMemory:
    """The learned limits of earlier runs, read once, and saved when a pool closes.

    Example::

        memory = LimitMemory(default_path(), max_age_s=86_400)
        remembered = memory.recall(key)     # None: nothing fresh for this key
        memory.save(limiter.feedback.learned())
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_age_s: float = 86_400.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path).expanduser()
        self.max_age_s = max_age_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: dict[str, Remembered] | None = None  # read on first use

    def __repr__(self) -> str:
        return f"LimitMemory({str(self.path)!r}, max_age_s={self.max_age_s})"

    def recall(self, key: Key) -> Remembered | None:
        """What an earlier run learned for ``key``, if it is fresh enough."""
        if self._entries is None:
            self._entries = self._read()
        return self._entries.get(fingerprint(key))

    def save(self, learned: Mapping[Key, Remembered]) -> None:
        """Write ``learned`` (``Feedback.learned``) over what the file holds for those keys,
        keeping other keys' fresh entries (another process's, another endpoint's). Never
        raises for a file it cannot write: the next run starts cold, with a warning."""
        entries = self._read()
        for key, entry in learned.items():
            entries[fingerprint(key)] = entry
        newest = sorted(entries.values(), key=lambda e: e.saved_at, reverse=True)
        body = {
            "version": _VERSION,
            "keys": [e.model_dump(mode="json") for e in newest[: self.max_keys]],
        }
        try:
            self._write(json.dumps(body, separators=(",", ":")))
        except OSError as exc:
            _log.warning("learned limits not saved to %s: %s", self.path, exc.strerror or exc)
            return
        self._entries = {e.id: e for e in newest[: self.max_keys]}

    def entry(self, key: Key, **learned: Any) -> Remembered:
        """A ``Remembered`` for ``key`` saved now (``learned``: its dimensions and window)."""
        return Remembered(
            id=fingerprint(key),
            host=_host(key.endpoint),
            model=key.model[:300],
            saved_at=self._clock(),
            **learned,
        )

    def _read(self) -> dict[str, Remembered]:
        try:
            with open(self.path, "rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            _log.warning("learned limits not read from %s: %s", self.path, exc.strerror or exc)
            return {}
        if len(raw) > MAX_FILE_BYTES:
            _log.warning(
                "learned limits not read from %s: larger than %d bytes", self.path, MAX_FILE_BYTES
            )
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            _log.warning("learned limits not read from %s: not JSON", self.path)
            return {}
        if not isinstance(body, dict) or body.get("version") != _VERSION:
            return {}  # another version's: it will be written over
        keys = body.get("keys")
        if not isinstance(keys, list):
            return {}
        now = self._clock()
        entries: dict[str, Remembered] = {}
        for item in keys[: self.max_keys]:
            try:
                entry = Remembered.model_validate(item)
            except ValidationError:
                continue  # a bad entry is skipped, the rest kept
            if 0 <= now - entry.saved_at <= self.max_age_s:
                entries[entry.id] = entry
        return entries

    def _write(self, text: str) -> None:
        """Atomically: a temporary file beside it, renamed over it; owner-only."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".learned_limits.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def clamp(per_minute: float, floor: float) -> float:
    """A remembered rate within what the limiter allows: never below its floor."""
    return max(floor, min(per_minute, _MAX_RATE)) if math.isfinite(per_minute) else floor
