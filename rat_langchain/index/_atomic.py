"""Replace a folder as a whole: readers see the old contents or the new, never half of each."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "readable_dir", "remove_leftovers"]

# Temporary folders of saves running in this process: never removed as leftovers.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_leftovers(target: Path) -> list[Path]:
    """Delete the temporary folders that interrupted saves of ``target`` left beside it (each
    can hold a whole index) and return them. A folder is a leftover when the process that made
    it is gone, or is this one and no longer saving into it; folders from before temporary
    names carried a process id (``.NAME.xxxxxxxx``) are always leftovers."""
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.(?:tmp-(?P<pid>\d+)-[a-z0-9_]+|[a-z0-9_]{{8}})$"
    )
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = pattern.match(path.name)
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        pid = match.group("pid")
        with _ACTIVE_LOCK:
            if path in _ACTIVE:
                continue
        if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another process may be saving into it right now
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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
    remove_leftovers(target)
    previous = _previous(target)
    if readable_dir(target) == previous:
        previous.rename(target)  # a crash between the renames left only this: put it back
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
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
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock file for the block, or raise ``BlockingIOError`` at once if
    another process (or another run in this one) holds it: two indexers started together on
    one folder both submitted, and paid for, the same batch."""
    import fcntl  # POSIX; the lock is advisory, for runs of this library

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockingIOError(f"another {what} is using {folder}") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def atomic_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` as a whole: written beside it, flushed to disk, renamed
    over it, the folder flushed too (a journal must survive the crash it is there for)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600: a journal names the corpus's documents; only its owner reads it
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
