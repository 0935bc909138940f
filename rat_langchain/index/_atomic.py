"""Replace a folder as a whole: readers see the old contents or the new, never half of each."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def readable_dir(target: Path) -> Path:
    """The folder to read for ``target``. A save killed between its two renames leaves the
    previous version at ``.NAME.old`` and nothing at ``NAME``; that version is still whole."""
    previous = _previous(target)
    if not target.exists() and previous.is_dir():
        return previous
    return target


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without an error,
    fsync what was written there and swap it in for ``target``; on any error delete it and leave
    ``target`` as it was. Why beside: ``rename`` is atomic only within one filesystem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = _previous(target)
    if readable_dir(target) == previous:
        previous.rename(target)  # a crash between the renames left only this: put it back
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(Path(root) / name, "rb") as handle:
                    os.fsync(handle.fileno())
        if previous.exists():
            shutil.rmtree(previous)
        if target.exists():
            target.rename(previous)
        tmp.rename(target)  # between the two renames only `previous` exists: readable_dir
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
