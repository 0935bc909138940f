"""The shape of the package: a deliberate public API that imports lazily, and import rules that
`make lint` enforces (and that do fail on a forbidden import)."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import pytest

import rat_langchain
import rat_langchain.sim

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rat_langchain"

EXPECTED = {
    "EmbeddingCache",
    "LLMBatcher",
    "Metrics",
    "MetricsCallbackHandler",
    "BackpressureError",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "SharedBreakerState",
    "ToolCatalog",
    "PlanCallbacks",
    "Orchestrator",
    "Joiner",
    "JoinInput",
    "Decision",
    "Planner",
    "PlanningError",
    "BackgroundVerifier",
    "Verdict",
    "ApiKeyError",
    "ApiPermissionError",
    "BatchIndexer",
    "BatchJobError",
    "BatchReport",
    "BatchSettings",
    "IndexReport",
    "load_folder",
    "MemoryStore",
    "ParallelPlanExecutor",
    "Plan",
    "PlanError",
    "PlanResult",
    "Step",
    "StepResult",
    "StepStatus",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientPool",
    "ConfigError",
    "DeadlineExceeded",
    "EmbeddingInputError",
    "EmbeddingResponseError",
    "FaissStore",
    "IndexLoadError",
    "PoolClosedError",
    "PooledOpenAIEmbeddings",
    "RateLimit",
    "RateLimiter",
    "RatConfig",
    "RatError",
    "RequestTooLarge",
    "ResilientChatOpenAI",
    "ResilientRunnable",
    "RetryPolicy",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "resilient",
}


def test_public_api_is_deliberate() -> None:
    assert set(rat_langchain.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(rat_langchain, name) is not None
    assert set(dir(rat_langchain)) >= EXPECTED
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = rat_langchain.Nope  # type: ignore[attr-defined]


def test_sim_api() -> None:
    assert {"Simulator", "SimConfig", "SimStats", "Reply"} <= set(rat_langchain.sim.__all__)


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return done.stdout.strip()


def test_import_loads_nothing_heavy() -> None:
    heavy = ["langchain_openai", "faiss", "bpe_openai", "aiohttp", "rat_langchain.sim", "openai"]
    loaded = _fresh(f"import sys, rat_langchain; print([m for m in {heavy!r} if m in sys.modules])")
    assert loaded == "[]"
    # and the heavy parts arrive with the first name that needs them
    assert (
        _fresh("import sys, rat_langchain; rat_langchain.FaissStore; print('faiss' in sys.modules)")
        == "True"
    )


def test_the_cli_help_imports_no_library_part() -> None:
    out = _fresh(
        "import sys; from rat_langchain import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('langchain_openai', 'openai', 'rat_langchain.sim')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    assert out.endswith("[]")


def test_module_paths_of_an_unreleased_layout_are_gone() -> None:
    """0.1.0 was never released: no alias layer keeps a layout nobody depends on."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rat_langchain.ratelimit")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rat_langchain.client")


def test_every_error_lives_in_errors_and_is_a_rat_error() -> None:
    from rat_langchain import errors

    for name in errors.__all__:
        error = getattr(errors, name)
        assert issubclass(error, rat_langchain.RatError)
        if name in rat_langchain.__all__:
            assert getattr(rat_langchain, name) is error
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" or "sim" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):  # not control flow
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"RatError", "Exception"}, f"{path}: {node.name} outside errors"


def test_api_key_errors_are_also_the_sdks_errors() -> None:
    assert issubclass(rat_langchain.ApiKeyError, openai.AuthenticationError)
    assert issubclass(rat_langchain.ApiPermissionError, openai.PermissionDeniedError)
    assert issubclass(rat_langchain.DeadlineExceeded, TimeoutError)


def test_no_module_imports_another_modules_private_names() -> None:
    offences = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if not node.module.startswith("rat_langchain") or node.module == module:
                continue
            for alias in node.names:
                name = alias.name
                target = f"{node.module}.{name}"
                is_module = (ROOT / Path(*target.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*target.split("."))
                ).is_dir()
                if name.startswith("_") and not is_module:
                    offences.append(f"{module}: from {node.module} import {name}")
    assert offences == []


def test_import_rules_fail_on_a_forbidden_import(tmp_path: Path) -> None:
    """`make lint` runs these contracts; here a copy of the package is given a forbidden import
    (the simulator importing the pool) and lint-imports must refuse it."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("lint-imports is not installed: `make test` installs the dev extra")
    shutil.copytree(PACKAGE, tmp_path / "rat_langchain")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    run = [str(lint), "--config", str(tmp_path / "pyproject.toml")]
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    clean = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert clean.returncode == 0, clean.stdout
    with (tmp_path / "rat_langchain" / "sim" / "_limits.py").open("a") as f:
        f.write("\nfrom rat_langchain.pool.pool import ClientPool  # noqa\n")
    broken = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert broken.returncode != 0
    assert "sim stands alone" in broken.stdout
    assert "BROKEN" in broken.stdout


def test_every_examples_third_party_import_is_installed_by_make_install() -> None:
    """examples/agent.py failed after `make install` with "No module named 'langchain'" (it was
    only in the dev extra): every distribution an example imports is a dependency or in an
    extra that `make install` installs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    makefile = (ROOT / "Makefile").read_text()
    installed = [line for line in makefile.splitlines() if "install --quiet -e '.[" in line]
    extras = {
        e
        for line in installed
        if "dev" not in line
        for e in line.split("[")[1].split("]")[0].split(",")
    }
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    names = {
        req.split(">")[0].split("[")[0].split("=")[0].strip().replace("-", "_")
        for req in requirements
    }
    names |= {"langchain_core", "openai", "numpy", "rat_langchain"}
    for example in (ROOT / "examples").glob("*.py"):
        for node in ast.walk(ast.parse(example.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or not top:
                    continue
                assert top in names, f"{example.name} imports {top}, which `make install` lacks"
