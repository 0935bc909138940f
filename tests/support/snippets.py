"""Run the Python blocks of a Markdown page, as a reader would paste them, one after another in
one namespace: top-level ``await`` allowed, each awaited block on a fresh event loop (the pool
and its models work from any loop)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return [match.group(1) for match in _BLOCK.finditer(page.read_text(encoding="utf-8"))]


def run_block(source: str, namespace: dict[str, Any], name: str) -> None:
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)
