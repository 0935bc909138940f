from rat_langchain._demo.stats import RunSummary
from rat_langchain._tokens import count_message_tokens, count_tokens
from rat_langchain.metrics.collector import percentile


def test_counts_tokens_offline_for_known_and_unknown_models() -> None:
    assert count_tokens("hello world", "gpt-4o-mini") == 2
    assert count_tokens("hello world", "my-self-hosted-llm") == 2
    assert count_tokens("", "gpt-4o") == 0
    assert count_tokens("<|endoftext|>", "gpt-4o") > 0  # special tokens are plain text here


def test_message_tokens_include_framing() -> None:
    messages = [{"role": "user", "content": "hello world"}]
    assert count_message_tokens(messages, "gpt-4o") == 2 + 3 + 3


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0.0


def test_run_summary_reuse() -> None:
    summary = RunSummary.of("x", [0.1] * 500, errors=0, wall_s=1.0, connections=100)
    assert summary.reuse == 0.8
    assert summary.throughput == 500
