"""Old import paths keep working: ``rat_langchain.ratelimit`` is ``rat_langchain.guards.limiter``.

Why a finder and not a stub module per old name: stubs would bring back the flat layout this
package left. The finder maps each old module name to its new home, the first time it is imported,
and both names then refer to the same module object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["MOVED", "install"]

# old module -> new module (session 4 layout: docs/design.md)
MOVED: dict[str, str] = {
    "rat_langchain.ratelimit": "rat_langchain.guards.limiter",
    "rat_langchain.breaker": "rat_langchain.guards.breaker",
    "rat_langchain.retry": "rat_langchain.guards.retry",
    "rat_langchain.shared": "rat_langchain.guards.redis",
    "rat_langchain.faiss_store": "rat_langchain.index.faiss_store",
    "rat_langchain.indexer": "rat_langchain.index.indexer",
    "rat_langchain.memory": "rat_langchain.index.memory",
    "rat_langchain.embedding_cache": "rat_langchain.index.embedding_cache",
    "rat_langchain.plan": "rat_langchain.plans.plan",
    "rat_langchain.executor": "rat_langchain.plans.executor",
    "rat_langchain.planner": "rat_langchain.plans.planner",
    "rat_langchain.catalog": "rat_langchain.plans.catalog",
    "rat_langchain.orchestrator": "rat_langchain.plans.orchestrator",
    "rat_langchain.verification": "rat_langchain.plans.verification",
    "rat_langchain.otel": "rat_langchain.metrics.otel",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed; importlib has just set its ``__spec__`` to
        the alias's, which would make a package look like a plain module: put it back."""
        module.__spec__ = self._spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Register the finder once (``import rat_langchain`` does)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
