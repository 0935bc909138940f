"""``progress(desc, unit, total)``: a tqdm bar on a terminal, whole lines anywhere else.

Why: tqdm redraws its bar with carriage returns. Where stderr is not a terminal (a CI log, a
container's log, a file) nothing erases the line, so the redraws ran together
(``indexing: 0doc …indexing: 11doc …``). There, progress is a line every ``every_s`` seconds
and one at the end, each ending in a newline.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["SILENT", "end", "progress"]


def progress(desc: str, unit: str, total: int | None = None, *, file: TextIO | None = None) -> Any:
    """A progress display with tqdm's ``update(n)`` and ``close()``."""
    out = file if file is not None else sys.stderr
    if _is_terminal(out):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=out)
    return _Lines(desc, unit, total, out)


def end(bar: Any, *, finished: bool) -> None:
    """Close ``bar``; a run that did not finish (interrupted, failed) is not reported "done"
    (the indexer printed "done" after a Ctrl-C). A tqdm bar is left as it stood."""
    stop = getattr(bar, "stop", None)
    if finished or stop is None:
        bar.close()
    else:
        stop()


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class _Lines:
    """Progress as whole lines: at most one per ``every_s`` seconds, and one at the end."""

    def __init__(
        self, desc: str, unit: str, total: int | None, out: TextIO, every_s: float = 10.0
    ) -> None:
        self.desc, self.unit, self.total, self.out = desc, unit, total, out
        self.every_s = every_s
        self.n = 0
        self._started = self._said = time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._said >= self.every_s:
            self._said = now
            self._say(now)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._say(time.monotonic(), end=", done")

    def stop(self) -> None:
        if not self._closed:
            self._closed = True
            self._say(time.monotonic(), end=", stopped")

    def _say(self, now: float, *, end: str = "") -> None:
        elapsed = max(now - self._started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.n / elapsed
        self.out.write(
            f"{self.desc}: {self.n}{of} {self.unit}s in {elapsed:.1f} s "
            f"({rate:.1f} {self.unit}s/s){end}\n"
        )
        self.out.flush()


class _Silent:
    """No progress shown (``progress=False``)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def stop(self) -> None:
        pass


SILENT = _Silent()
