"""``Key``: what one quota, one breaker and one metrics series belong to: (endpoint, model,
tenant).

Why a value type: keys used to be ``str | tuple`` with ``isinstance`` checks wherever they were
read and three ways of writing them as text. Now one ``Key.of`` accepts what callers pass, and one
``str(key)`` names it everywhere (breaker names, metrics, messages). It is a ``NamedTuple``; a key
without a tenant equals and hashes as the pair ``(url, model)``, so either finds the same entry in
a dict (the form callers and tests have always used).

Why a tenant: two API keys on one endpoint are two accounts with two quotas. Sharing one limiter
and one breaker let one tenant's ``insufficient_quota`` open the other's circuit and one tenant's
low limit throttle the other. The tenant is a fingerprint of the API key (:func:`tenant_of`), never
the key: it appears in metrics labels and Redis key names, where a secret must not.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from pydantic import SecretStr

__all__ = ["Key", "KeyLike", "tenant_of"]

_FINGERPRINT_BYTES = 6  # 48 bits: enough to tell an endpoint's tenants apart, useless to guess with


def tenant_of(api_key: object) -> str:
    """A short fingerprint of ``api_key``, a ``str`` or a ``SecretStr`` (``""`` for none, or
    for a callable that fetches a key per call: then the tenant is unknown and calls share a
    key): the same key gives the same tenant in every process, and the fingerprint reveals
    nothing usable about the key. One function for every holder of a key (the chat model's
    ``SecretStr``, the config's, a wrapped model's), so none unwraps it its own way."""
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if not api_key or not isinstance(api_key, str):
        return ""
    digest = hashlib.blake2b(api_key.encode(), digest_size=_FINGERPRINT_BYTES, person=b"rat-tenant")
    return digest.hexdigest()


class Key(NamedTuple):
    """An endpoint's base URL (may be empty for a named wrapper), a model or name, and the
    tenant (an API-key fingerprint, ``""`` when unknown)."""

    endpoint: str
    model: str
    tenant: str = ""

    @classmethod
    def of(cls, value: KeyLike) -> Key:
        """``Key`` from a ``Key``, an ``(endpoint, model[, tenant])`` tuple, or a bare name."""
        if isinstance(value, Key):
            return value
        if isinstance(value, tuple):
            if len(value) not in (2, 3):
                raise ValueError(
                    f"a key is (endpoint, model) or (endpoint, model, tenant), got {value!r}"
                )
            return cls(*(str(part) for part in value))
        return cls("", str(value))

    @property
    def id(self) -> str:
        """An unambiguous text form for names shared with other processes (Redis keys): unlike
        ``str(key)``, endpoint ``…/v1/x`` with model ``y`` and endpoint ``…/v1`` with model
        ``x/y`` differ here."""
        return json.dumps(list(self), separators=(",", ":"), ensure_ascii=True)

    def __eq__(self, other: object) -> bool:
        if type(other) is tuple and len(other) == 2:
            return not self.tenant and (self.endpoint, self.model) == other
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.endpoint, self.model)) if not self.tenant else tuple.__hash__(self)

    def __str__(self) -> str:
        name = f"{self.endpoint}/{self.model}" if self.endpoint else self.model
        return f"{name}#{self.tenant}" if self.tenant else name


KeyLike = Key | tuple[str, str] | tuple[str, str, str] | str
