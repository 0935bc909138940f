"""Token counts made offline (bpe-openai), for known and unknown models."""

from rat_langchain._tokens import count_message_tokens, count_tokens


def test_counts_tokens_offline_for_known_and_unknown_models() -> None:
    assert count_tokens("hello world", "gpt-4o-mini") == 2
    assert count_tokens("hello world", "my-self-hosted-llm") == 2
    assert count_tokens("", "gpt-4o") == 0
    assert count_tokens("<|endoftext|>", "gpt-4o") > 0  # special tokens are plain text here


def test_message_tokens_include_framing() -> None:
    messages = [{"role": "user", "content": "hello world"}]
    assert count_message_tokens(messages, "gpt-4o") == 2 + 3 + 3
