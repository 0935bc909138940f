"""Generate docs/configuration.md from RatConfig, so the reference cannot drift from the code.

.venv/bin/python -m tools.config_docs > docs/configuration.md
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from rat_langchain.config import RatConfig

_INTRO = """# Configuration reference

Generated from `RatConfig` by `python -m tools.config_docs` (a test checks it is current).
`config.yaml` at the project root holds the same keys with their defaults.

Load with `RatConfig.load("config.yaml")`, `RatConfig.load()` (defaults) or
`RatConfig.from_dict({...})`.
Environment variables override any key: `RAT_` + the key path in capitals with `__` between levels,
e.g. `RAT_PERFORMANCE__RATE_LIMITING__RPM_LIMIT=600`. Unknown keys, wrong types and out-of-range
values raise `ConfigError`, which names the key path.
"""


def _default(value: object) -> str:
    if isinstance(value, BaseModel):
        return ""
    return "`null`" if value is None else f"`{json.dumps(value)}`"


def _section(model: type[BaseModel], path: str, out: list[str]) -> None:
    out.append(f"\n## `{path}`\n")
    if model.__doc__:
        out.append(model.__doc__.strip().splitlines()[0] + "\n")
    rows: list[str] = []
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, f"{path}.{name}"))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{name}` | {_default(default)} | {field.description or ''} |")
    if rows:
        out.extend(["| key | default | meaning |", "|---|---|---|", *rows])
    for sub, sub_path in nested:
        _section(sub, sub_path, out)


def render() -> str:
    out = [_INTRO]
    for name, field in RatConfig.model_fields.items():
        annotation = field.annotation
        assert isinstance(annotation, type)
        assert issubclass(annotation, BaseModel)
        _section(annotation, name, out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
