"""Learned limits remembered across runs (issue 33, item 3): what a limiter learned is saved
when its pool closes and a new one starts from it, for the same endpoint, model and API-key
fingerprint only, bounded by its own configuration; the file is untrusted and holds no secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rat_langchain.guards.key import Key, tenant_of
from rat_langchain.guards.limiter import RateLimiter
from rat_langchain.guards.remember import MAX_FILE_BYTES, LimitMemory, fingerprint
from tests.conftest import API_KEY
from tests.support.clock import FakeClock

KEY = Key("https://user:pw@gateway.example:8443/v1?token=t0ps3cret", "m", tenant_of(API_KEY))


def learned_limiter(clock: FakeClock, memory: LimitMemory, **kwargs: object) -> RateLimiter:
    """A limiter that closed a silent key at 1200 RPM after its first 429."""
    limiter = RateLimiter("auto", None, clock=clock, memory=memory, **kwargs)  # type: ignore[arg-type]
    for _ in range(40):  # 20 a second answered
        clock.now += 0.05
        assert limiter.try_acquire(KEY) is not None
        limiter.observe(KEY, {})
        limiter.acknowledge(KEY)
    limiter.observe_429(KEY, {})
    return limiter


def test_a_new_limiter_starts_from_what_the_last_one_learned(tmp_path: Path) -> None:
    clock, wall = FakeClock(), FakeClock(1_000_000.0)
    path = tmp_path / "limits.json"
    first = learned_limiter(clock, LimitMemory(path, clock=wall))
    row = first.limits()[KEY]["requests"]
    assert row["source"] == "cubic"
    LimitMemory(path, clock=wall).save(first.feedback.learned())

    again = RateLimiter("auto", None, clock=FakeClock(), memory=LimitMemory(path, clock=wall))  # type: ignore[arg-type]
    recalled = again.limits() or {}
    assert recalled == {}  # made on first use
    assert again.try_acquire(KEY) is not None
    now = again.limits()[KEY]["requests"]
    assert now["source"] == "cubic"  # not open, not slow-starting from nothing
    assert now["per_minute"] == pytest.approx(row["per_minute"])
    # another key (another API key's fingerprint) starts cold
    other = Key(KEY.endpoint, KEY.model, tenant_of("sk-other"))
    assert again.try_acquire(other) is not None
    assert again.limits()[other]["requests"]["source"] in ("start", "open")


def test_the_file_holds_no_secret_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    clock, wall = FakeClock(), FakeClock(1_000_000.0)
    path = tmp_path / "sub" / "limits.json"
    limiter = learned_limiter(clock, LimitMemory(path, clock=wall))
    LimitMemory(path, clock=wall).save(limiter.feedback.learned())
    text = path.read_text()
    for secret in (API_KEY, "pw", "t0ps3cret", "user", "/v1"):
        assert secret not in text
    entry = json.loads(text)["keys"][0]
    assert entry["host"] == "gateway.example:8443"
    assert entry["id"] == fingerprint(KEY)
    assert path.stat().st_mode & 0o077 == 0
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_remembered_limit_expires_and_a_configured_one_is_never_seeded(tmp_path: Path) -> None:
    clock, wall = FakeClock(), FakeClock(1_000_000.0)
    path = tmp_path / "limits.json"
    limiter = learned_limiter(clock, LimitMemory(path, clock=wall))
    LimitMemory(path, clock=wall).save(limiter.feedback.learned())
    wall.now += 3600.0 + 1
    stale = RateLimiter("auto", None, memory=LimitMemory(path, max_age_s=3600.0, clock=wall))  # type: ignore[arg-type]
    assert stale.try_acquire(KEY) is not None
    assert stale.limits()[KEY]["requests"]["source"] in ("start", "open")
    configured = RateLimiter(60, None, memory=LimitMemory(path, clock=wall))
    assert configured.try_acquire(KEY) is not None
    assert configured.limits()[KEY]["requests"] == {
        "per_minute": 60 * 0.9,
        "burst_s": 1.0,
        "source": "configured",
        "sending_per_minute": None,
    }


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"version": 99, "keys": []}',
        b'{"version": 1, "keys": 5}',
        b"x" * (MAX_FILE_BYTES + 10),
    ],
)
def test_a_bad_file_is_ignored_with_a_warning_and_written_over(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "limits.json"
    path.write_bytes(content)
    memory = LimitMemory(path)
    assert memory.recall(KEY) is None
    limiter = learned_limiter(FakeClock(), memory)
    memory.save(limiter.feedback.learned())
    assert LimitMemory(path).recall(KEY) is not None


def test_bad_entries_are_skipped_and_values_bounded_by_the_readers_floors(tmp_path: Path) -> None:
    wall = FakeClock(1_000_000.0)
    good = {"id": fingerprint(KEY), "saved_at": wall.now, "model": "m"}
    entries = [
        {**good, "requests": {"per_minute": -5, "source": "cubic"}},  # negative: skipped
        {**good, "requests": {"per_minute": 1e300, "source": "cubic"}},  # absurd: skipped
        {**good, "id": "../../etc", "requests": {"per_minute": 600, "source": "cubic"}},
        "garbage",
        {**good, "requests": {"per_minute": 0.0001, "source": "cubic"}, "window": {"limit": 1e9}},
    ]
    path = tmp_path / "limits.json"
    path.write_text(json.dumps({"version": 1, "keys": entries}))
    limiter = RateLimiter("auto", None, max_pause_s=60.0, memory=LimitMemory(path, clock=wall))  # type: ignore[arg-type]
    assert limiter.try_acquire(KEY) is not None
    assert limiter.limits()[KEY]["requests"]["per_minute"] >= 1.0  # the floor: 60 s / request
    # a window of 10^9 remembered: out of bounds, the entry is skipped (the key starts cold)
    assert limiter.limits()[KEY]["requests"]["source"] in ("start", "open")
    entries[-1] = {**good, "requests": {"per_minute": 0.0001, "source": "cubic"}}
    path.write_text(json.dumps({"version": 1, "keys": entries}))
    floored = RateLimiter("auto", None, max_pause_s=60.0, memory=LimitMemory(path, clock=wall))  # type: ignore[arg-type]
    floored.try_acquire(KEY)  # a rate of one a minute: the first may or may not fit
    assert floored.limits()[KEY]["requests"]["per_minute"] == pytest.approx(1.0)
    assert floored.limits()[KEY]["requests"]["source"] == "cubic"


def test_a_file_that_cannot_be_written_warns_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    memory = LimitMemory(blocker / "limits.json")  # its folder is a file
    limiter = learned_limiter(FakeClock(), memory)
    memory.save(limiter.feedback.learned())
    assert "learned limits not saved" in caplog.text
