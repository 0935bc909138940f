from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rat_langchain import ConfigError, RatConfig

ROOT = Path(__file__).resolve().parents[2]


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= _field_paths(annotation, f"{path}.")
    return paths


def _yaml_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        paths.add(f"{prefix}{key}")
        if isinstance(value, dict) and value:
            paths |= _yaml_paths(value, f"{prefix}{key}.")
    return paths


def test_shipped_config_yaml_equals_the_defaults() -> None:
    assert RatConfig.load(ROOT / "config.yaml", env={}) == RatConfig.from_dict({}, env={})


def test_every_key_is_in_config_yaml_and_documented() -> None:
    text = (ROOT / "config.yaml").read_text()
    data = yaml.safe_load(text)
    assert _field_paths(RatConfig) == _yaml_paths(data)
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            key, _, value = stripped.partition(":")
            # every leaf key carries a comment; section headers may carry one
            if value.strip() and not value.strip().startswith("#"):
                assert "#" in value, f"config.yaml key {key!r} has no comment"


def test_defaults() -> None:
    config = RatConfig.load(env={})
    assert config.performance.rate_limiting.safety_margin == 0.9
    assert config.performance.batch_embeddings.batch_size is None  # sized per call
    assert config.performance.connection_pooling.keepalive == 1000  # the SDK's max_connections


def test_from_dict_overrides() -> None:
    config = RatConfig.from_dict(
        {
            "performance": {
                "rate_limiting": {"rpm_limit": 600, "per_model": {"gpt-4o": {"tpm_limit": 9}}}
            }
        },
        env={},
    )
    assert config.performance.rate_limiting.rpm_limit == 600
    assert config.performance.rate_limiting.per_model["gpt-4o"].tpm_limit == 9


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (
            {"performance": {"rate_limiting": {"rpm_limit": -5}}},
            "performance.rate_limiting.rpm_limit",
            "greater than 0",
        ),
        (
            {"performance": {"rate_limiting": {"rpm_limt": 5}}},
            "performance.rate_limiting.rpm_limt",
            "unknown key",
        ),
        (
            {"performance": {"batch_embeddings": {"batch_size": "many"}}},
            "performance.batch_embeddings.batch_size",
            "expected a number",
        ),
        (
            {"performance": {"rate_limiting": {"safety_margin": 1.5}}},
            "performance.rate_limiting.safety_margin",
            "less than or equal",
        ),
        (
            {"performance": {"connection_pooling": {"transport": "curl"}}},
            "performance.connection_pooling.transport",
            "'sdk'",
        ),
        ({"perfomance": {}}, "perfomance", "unknown key"),
    ],
)
def test_errors_name_the_key_path(data: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RatConfig.from_dict(data, env={})
    assert any(p == path and fragment in m for p, m in info.value.errors), info.value.errors
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("connection_pooling.max_connections", "50"),
        ("rate_limiting.rpm_limit", "600"),
        ("rate_limiting.safety_margin", "0.5"),
        ("retries.timeout_s", "5"),
        ("rate_limiting.per_model.m.tpm_limit", "1000"),
        ("connection_pooling.max_connections", True),
    ],
)
def test_a_number_written_as_text_is_refused(path: str, value: object) -> None:
    """``max_connections: '50'`` was accepted as 50: a quoted number in YAML is a mistake the
    user should see (pydantic's lax mode hid it); strict for numbers, as pydantic's strict is."""
    *sections, leaf = path.split(".")
    data: dict[str, Any] = {leaf: value}
    for section in reversed(sections):
        data = {section: data}
    with pytest.raises(ConfigError) as info:
        RatConfig.from_dict({"performance": data}, env={})
    [(where, message)] = info.value.errors
    assert where == f"performance.{path}"
    assert message.startswith("expected a number")
    assert "Value error" not in message
    assert message.count("got") == 1


def test_environment_variables_still_give_numbers_as_text() -> None:
    env = {
        "RAT_PERFORMANCE__CONNECTION_POOLING__MAX_CONNECTIONS": "50",
        "RAT_PERFORMANCE__RETRIES__TIMEOUT_S": "2.5",
        "RAT_PERFORMANCE__RATE_LIMITING__TPM_LIMIT": "auto",
    }
    config = RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": 600}}}, env=env)
    assert config.performance.connection_pooling.max_connections == 50
    assert config.performance.retries.timeout_s == 2.5
    assert config.performance.rate_limiting.tpm_limit == "auto"
    assert RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": "auto"}}}, env={})


def test_a_yaml_syntax_error_reads_as_lines_with_the_place(tmp_path: Path) -> None:
    """PyYAML's message went through repr: one line of escaped text with \\n in it."""
    file = tmp_path / "config.yaml"
    file.write_text("performance:\n  rate_limiting:\n    rpm_limit: [1, 2\n  retries: 3\n")
    with pytest.raises(ConfigError) as info:
        RatConfig.load(file, env={})
    text = str(info.value)
    assert "\\n" not in text
    assert '"' not in text
    assert "not valid YAML at line 4, column 10: expected ',' or ']', but got ':'" in text
    assert "(while parsing a flow sequence at line 3, column 16)" in text
    assert "\n      retries: 3\n" in text  # the line itself, and a caret under the place
    file.write_text("a: b: c\n")
    with pytest.raises(ConfigError, match="line 1, column 5: mapping values are not allowed"):
        RatConfig.load(file, env={})


def test_cross_field_check_names_its_section() -> None:
    with pytest.raises(ConfigError, match="max_keepalive_connections must not exceed"):
        RatConfig.from_dict(
            {
                "performance": {
                    "connection_pooling": {"max_connections": 10, "max_keepalive_connections": 20}
                }
            },
            env={},
        )


def test_environment_overrides_file(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("performance:\n  rate_limiting:\n    rpm_limit: 100\n")
    env = {
        "RAT_PERFORMANCE__RATE_LIMITING__RPM_LIMIT": "600",
        "RAT_PERFORMANCE__CONNECTION_POOLING__ENABLED": "false",
        "RAT_ENDPOINT__BASE_URL": "http://127.0.0.1:9/v1",
        "UNRELATED": "x",
    }
    config = RatConfig.load(file, env=env)
    assert config.performance.rate_limiting.rpm_limit == 600
    assert config.performance.connection_pooling.enabled is False
    assert config.endpoint.base_url == "http://127.0.0.1:9/v1"


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"performance\.retries\.max_attempts"):
        RatConfig.from_dict({}, env={"RAT_PERFORMANCE__RETRIES__MAX_ATTEMPTS": "zero"})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        RatConfig.load(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        RatConfig.load(bad, env={})
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("performance:\n  retries:\n    max_attempts: 0\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml[\s\S]*performance\.retries\.max_attempts"):
        RatConfig.load(wrong, env={})


def test_api_key_is_secret_in_repr_and_errors() -> None:
    secret = "sk-very-secret-value-42"
    config = RatConfig.from_dict({"endpoint": {"api_key": secret}}, env={})
    assert config.endpoint.api_key is not None
    assert config.endpoint.api_key.get_secret_value() == secret
    assert secret not in repr(config)
    assert secret not in str(config)
    with pytest.raises(ConfigError) as info:
        RatConfig.from_dict({"endpoint": {"api_key": ["not", secret]}}, env={})
    assert secret not in str(info.value)


def test_configuration_reference_is_generated_from_the_model() -> None:
    from tools.config_docs import render

    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "regenerate: python -m tools.config_docs > docs/configuration.md"
    )


def test_retired_settings_load_with_a_warning_naming_them() -> None:
    data = {
        "performance": {
            "caching": {"prompt_templates": True, "tool_catalog": False},
            "background_tasks": {"memory_updates": False},
        }
    }
    with pytest.warns(DeprecationWarning, match="is no longer a setting") as record:
        config = RatConfig.from_dict(data, env={})
    messages = sorted(str(w.message) for w in record)
    assert messages[0].startswith("performance.background_tasks.memory_updates is no longer")
    assert messages[1].startswith("performance.caching.prompt_templates is no longer")
    assert config.performance.caching.tool_catalog is False  # the rest still applies
    assert "prompt_templates" in data["performance"]["caching"]  # the caller's data is intact


def test_every_setting_is_read_by_the_library() -> None:
    """A setting documented in config.yaml must do something: its name appears in the code
    outside config.py (the three that did nothing were removed or made real)."""
    from pathlib import Path

    from rat_langchain.config import PerformanceConfig

    package = Path(__file__).resolve().parents[2] / "rat_langchain"
    code = "\n".join(
        p.read_text()
        for p in package.rglob("*.py")
        if p.name != "config.py" and "_demo" not in p.parts
    )
    unused = []
    for section_name, section in PerformanceConfig.model_fields.items():
        assert section.annotation is not None
        for field in section.annotation.model_fields:  # type: ignore[union-attr]
            used = f".{field}" in code or f"{section_name}.model_dump" in code
            via_property = {"max_keepalive_connections"}  # ConnectionPoolingConfig.keepalive
            if not used and field not in ("enabled", *via_property):
                unused.append(f"{section_name}.{field}")
        if "enabled" in section.annotation.model_fields:  # type: ignore[union-attr]
            assert (
                f"{section_name}.enabled" in code
                or "settings.enabled" in code
                or (
                    section_name in ("batch_embeddings",)
                    and "self.enabled" in (package / "config.py").read_text()
                )
            ), section_name
    assert unused == []


def test_constructors_take_their_defaults_from_the_config_model() -> None:
    """One default per setting: a RateLimiter, CircuitBreaker or RetryPolicy built with no
    arguments behaves as the default config says (first_hold_s once differed)."""
    from rat_langchain.config import CircuitBreakerConfig, RateLimitingConfig, RetriesConfig
    from rat_langchain.guards.breaker import CircuitBreaker
    from rat_langchain.guards.limiter import START_RPM, START_TPM, RateLimit, RateLimiter
    from rat_langchain.guards.retry import RetryPolicy

    limits = RateLimitingConfig()
    limiter = RateLimiter()
    assert limiter.default == RateLimit.of(
        limits.rpm_limit, limits.tpm_limit, limits.safety_margin, limits.burst_s
    )
    assert (limits.rpm_limit, limits.tpm_limit) == ("auto", "auto")
    assert (limiter.default.rpm, limiter.default.tpm) == (START_RPM, START_TPM)
    assert limiter.default.learn_rpm
    assert limiter.default.learn_tpm
    assert limiter.feedback.first_hold_s == limits.first_hold_s
    assert (limiter.max_queue, limiter.max_queue_wait_s) == (None, None)
    breaker = CircuitBreaker("x")
    for name, value in CircuitBreakerConfig().model_dump().items():
        if name not in ("enabled", "share_open_state"):
            assert getattr(breaker, name) == value, name
    retries = RetriesConfig()
    policy = RetryPolicy()
    for name in ("max_attempts", "initial_backoff_s", "max_backoff_s", "max_server_wait_s"):
        assert getattr(policy, name) == getattr(retries, name), name


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
performance: *i
"""


def test_a_yaml_alias_bomb_fails_fast_with_a_config_error(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "config.yaml"
    path.write_text(BOMB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="alias bomb") as caught:
        RatConfig.load(path)
    assert len(str(caught.value)) < 1000
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50  # MB
    path.write_text("a: &a [*a]\nperformance: *a\n")  # an alias of itself
    with pytest.raises(ConfigError):
        RatConfig.load(path)
    path.write_text("performance:" + " [" * 5000 + " ]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"nested too deeply|not valid YAML"):
        RatConfig.load(path)
    shared = "x: &x {rpm_limit: 600}\nperformance: {rate_limiting: *x}\n"
    path.write_text(shared)  # an ordinary alias still works
    with pytest.raises(ConfigError, match="x: unknown key"):
        RatConfig.load(path)


def test_booleans_are_not_numbers_and_infinity_is_not_a_timeout() -> None:
    for section, key, value in (
        ("rate_limiting", "rpm_limit", True),
        ("rate_limiting", "safety_margin", True),
        ("retries", "timeout_s", float("inf")),
        ("connection_pooling", "request_timeout_s", float("inf")),
        ("retries", "max_backoff_s", float("nan")),
    ):
        with pytest.raises(ConfigError, match=f"performance.{section}.{key}"):
            RatConfig.from_dict({"performance": {section: {key: value}}}, env={})
    config = RatConfig.from_dict({"performance": {"retries": {"timeout_s": None}}}, env={})
    assert config.performance.retries.timeout_s is None  # null still means none
    env = {"RAT_PERFORMANCE__RATE_LIMITING__RPM_LIMIT": "600"}
    assert RatConfig.from_dict({}, env=env).performance.rate_limiting.rpm_limit == 600


def test_error_messages_cut_a_huge_value() -> None:
    with pytest.raises(ConfigError) as caught:
        RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": "9" * 100_000}}})
    assert len(str(caught.value)) < 600


def test_an_error_from_an_environment_variable_names_the_variable() -> None:
    """A mistyped variable was reported as ``performance.rate_limitng: unknown key``, without
    naming the variable that set it."""
    name = "RAT_PERFORMANCE__RATE_LIMITNG__RPM_LIMIT"
    with pytest.raises(ConfigError, match=name):
        RatConfig.from_dict({}, env={name: "5"})
    with pytest.raises(ConfigError) as caught:
        RatConfig.from_dict({"performance": {"rate_limitng": {}}}, env={})
    assert "environment variable" not in str(caught.value)  # a file's key is not a variable's
