"""Collection hooks of the integration tests."""

from __future__ import annotations

from typing import Any

import pytest

# Async standard tests that plain ChatOpenAI fails in test_chat_standard.py, each with "Event
# loop is closed": its cached async client belongs to an earlier test's loop. The pool's
# per-loop client is the fix, so the same tests pass for pool.chat_model().
PLAIN_LOOP_BOUND = {
    "test_astream",
    "test_astream_events_v3",
    "test_astream_with_model_override",
    "test_tool_calling_async",
    "test_structured_output_async",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if "TestPlainChatOpenAIIntegration" in item.nodeid and name in PLAIN_LOOP_BOUND:
            item.add_marker(
                pytest.mark.xfail(reason="ChatOpenAI: 'Event loop is closed'", strict=False)
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the standard chat suites' counts, pool beside plain ChatOpenAI."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_chat_standard.py::" not in nodeid:
                continue
            suite = nodeid.split("::")[1]
            counts.setdefault(suite, {}).setdefault(outcome, 0)
            counts[suite][outcome] += 1
    if not counts:
        return
    terminalreporter.section("LangChain standard chat suites (pool beside plain ChatOpenAI)")
    for suite, by_outcome in sorted(counts.items()):
        shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(by_outcome.items()))
        terminalreporter.write_line(f"{suite}: {shown}")
