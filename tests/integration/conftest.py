"""Collection hooks of the integration tests."""

from __future__ import annotations

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
