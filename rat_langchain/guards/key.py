"""``Key``: what one quota, one breaker and one metrics series belong to: (endpoint, model).

Why a value type: keys used to be ``str | tuple`` with ``isinstance`` checks wherever they were
read and three ways of writing them as text. Now one ``Key.of`` accepts what callers pass, and one
``str(key)`` names it everywhere (breaker names, Redis keys, messages). It is a ``NamedTuple``, so
``Key(url, model) == (url, model)`` and either finds the same entry in a dict.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Key", "KeyLike"]


class Key(NamedTuple):
    """An endpoint's base URL (may be empty for a named wrapper) and a model or name."""

    endpoint: str
    model: str

    @classmethod
    def of(cls, value: KeyLike) -> Key:
        """``Key`` from a ``Key``, an ``(endpoint, model)`` pair, or a bare name."""
        if isinstance(value, Key):
            return value
        if isinstance(value, tuple):
            endpoint, model = value
            return cls(str(endpoint), str(model))
        return cls("", str(value))

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.model}" if self.endpoint else self.model


KeyLike = Key | tuple[str, str] | str
