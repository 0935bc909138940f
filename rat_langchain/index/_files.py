"""Reading a saved folder that may come from elsewhere (docs/security.md).

A saved index is untrusted input: it may be damaged, truncated, or made to hurt. So a loader
reads regular files inside its folder only (never a symlink, a FIFO or a device), reads no more
than a file's own size, parses JSON with its failures (including ``RecursionError``) turned into
:class:`~rat_langchain.errors.IndexLoadError`, and checks every field's type before using it.
Every error names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from rat_langchain.errors import IndexLoadError, shorten
from rat_langchain.index._atomic import readable_dir, remove_leftovers

__all__ = [
    "checked_int",
    "digest",
    "open_folder",
    "parse_json",
    "read_bytes",
    "read_json",
    "require",
]


def require(condition: bool, where: Path, problem: str) -> None:
    """``IndexLoadError`` naming ``where`` and ``problem`` unless ``condition`` holds."""
    if not condition:
        raise IndexLoadError(f"{where}: {problem}")


def open_folder(path: str | os.PathLike[str], kind: str) -> Path:
    """The folder to read for ``path`` (see ``readable_dir``); it must be a real directory.
    What interrupted saves left beside it is removed first."""
    remove_leftovers(Path(path))
    folder = readable_dir(Path(path))
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        raise IndexLoadError(f"{folder} is not a saved {kind}: the folder is missing") from None
    require(
        stat.S_ISDIR(mode), folder, f"not a folder (a saved {kind} is a folder, never a symlink)"
    )
    return folder


def read_bytes(folder: Path, name: str, *, max_bytes: int | None = None) -> bytes:
    """The contents of ``folder/name``: a regular file directly in ``folder``, at most
    ``max_bytes`` long. Symlinks, FIFOs and devices are refused before they are opened (a FIFO
    would block, ``/dev/zero`` would never end), and no more than the file's size is read."""
    path = folder / name
    require("/" not in name and name not in ("", ".", ".."), folder, f"bad file name {name!r}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise IndexLoadError(f"{path} is missing") from None
    require(
        stat.S_ISREG(info.st_mode),
        path,
        "not a regular file (symlinks, folders, FIFOs and devices are never read)",
    )
    if max_bytes is not None:
        require(info.st_size <= max_bytes, path, f"{info.st_size} bytes, more than {max_bytes}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise IndexLoadError(f"{path} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        require(stat.S_ISREG(os.fstat(handle.fileno()).st_mode), path, "not a regular file")
        data = handle.read(info.st_size + 1)
    require(len(data) == info.st_size, path, "changed while it was read")
    return data


def read_json(folder: Path, name: str, *, max_bytes: int | None = None) -> Any:
    """``read_bytes`` parsed as UTF-8 JSON; any failure is an ``IndexLoadError`` (damaged)."""
    return parse_json(read_bytes(folder, name, max_bytes=max_bytes), folder / name)


def parse_json(data: bytes, path: Path) -> Any:
    """UTF-8 JSON from ``path``'s bytes; any failure is an ``IndexLoadError`` (damaged)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else shorten(str(exc))
        raise IndexLoadError(f"{path} is damaged (not valid JSON): {problem}") from None


def checked_int(value: object, where: Path, field: str, *, low: int = 0, high: int = 2**62) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else ``IndexLoadError``."""
    if type(value) is not int or not low <= value <= high:
        raise IndexLoadError(
            f"{where}: {field} must be an integer in [{low}, {high}], got {shorten(value, 40)}"
        )
    return value


def digest(data: bytes) -> str:
    """The checksum a save records for each file, so that any change to it is found."""
    return hashlib.sha256(data).hexdigest()
