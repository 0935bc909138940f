"""Progress that reads well off a terminal: tqdm's carriage-return redraws ran together in logs
(``indexing: 0doc …indexing: 11doc …``); there, progress is whole lines."""

from __future__ import annotations

import io

from rat_langchain._progress import progress


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_whole_lines() -> None:
    log = _Log()
    bar = progress("indexing", "doc", file=log)
    for _ in range(50):
        bar.update(10)
    bar.close()
    bar.close()  # once only
    text = log.getvalue()
    assert "\r" not in text
    assert text.endswith("\n")
    assert text.splitlines()[-1].startswith("indexing: 500 docs in")
    assert len(text.splitlines()) == 1  # the run took under the line interval: one at the end


def test_on_a_terminal_it_is_a_tqdm_bar() -> None:
    terminal = _Terminal()
    bar = progress("indexing", "doc", total=3, file=terminal)
    bar.update(3)
    bar.close()
    assert "\r" in terminal.getvalue()
