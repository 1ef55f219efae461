"""Settings from arguments, environment and a TOML file (ratelimit_client._config)."""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing

import pytest

from ratelimit_client import (
    DEFAULT_TIERS,
    ConfigError,
    Limit,
    MemoryBackend,
    Rate,
    RateLimitTransport,
    RetryPolicy,
    Settings,
    load_settings,
)
from ratelimit_client._config import DEFAULT_BACKEND


@pytest.fixture
def toml(tmp_path: pathlib.Path) -> typing.Callable[[str], pathlib.Path]:
    def write(text: str) -> pathlib.Path:
        path = tmp_path / "ratelimit-client.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_defaults_and_their_sources() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.tier == "free"
    assert settings.quota == Rate(50, 60)
    assert settings.backend == DEFAULT_BACKEND
    assert dict(settings.tiers) == dict(DEFAULT_TIERS)
    assert settings.retry == RetryPolicy()
    assert set(settings.sources.values()) == {"default"}
    fields = {f.name for f in dataclasses.fields(Settings)} - {"retry", "sources"}
    retry_fields = {f"retry.{f.name}" for f in dataclasses.fields(RetryPolicy)}
    tier_fields = {f"tiers.{name}" for name in DEFAULT_TIERS}
    assert set(settings.sources) == fields | retry_fields | tier_fields


def test_os_environ_is_read_when_no_environ_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATELIMIT_CLIENT_TIER", "paid")
    settings = load_settings()
    assert settings.tier == "paid"
    assert settings.sources["tier"] == "environment RATELIMIT_CLIENT_TIER"


def test_precedence_arguments_environment_file_defaults(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('burst = 2\nmax_wait = 5\nnamespace = "from-file"\n[retry]\nbackoff_base = 1.0\nbackoff_max = 9\n')
    environ = {
        "RATELIMIT_CLIENT_BURST": "3",
        "RATELIMIT_CLIENT_MAX_WAIT": "6",
        "RATELIMIT_CLIENT_RETRY_BACKOFF_MAX": "8",
    }
    settings = load_settings(config_file=path, environ=environ, burst=4)
    assert (settings.burst, settings.max_wait, settings.namespace) == (4, 6.0, "from-file")
    assert (settings.retry.backoff_base, settings.retry.backoff_max) == (1.0, 8.0)
    file = f"file {path}"
    assert settings.sources["burst"] == "argument"
    assert settings.sources["max_wait"] == "environment RATELIMIT_CLIENT_MAX_WAIT"
    assert settings.sources["namespace"] == file
    assert settings.sources["retry.backoff_base"] == file
    assert settings.sources["retry.backoff_max"] == "environment RATELIMIT_CLIENT_RETRY_BACKOFF_MAX"
    assert settings.sources["tier"] == "default"
    assert settings.sources["retry.throttle_attempts"] == "default"


def test_an_argument_of_none_means_not_given() -> None:
    settings = load_settings(environ={"RATELIMIT_CLIENT_TIER": "paid"}, tier=None, burst=None)
    assert settings.tier == "paid"
    assert settings.burst is None
    assert settings.sources["burst"] == "default"


def test_a_retry_policy_argument_replaces_every_retry_field() -> None:
    policy = RetryPolicy(throttle_attempts=3)
    settings = load_settings(environ={"RATELIMIT_CLIENT_RETRY_BACKOFF_MAX": "8"}, retry=policy)
    assert settings.retry == policy
    assert {v for k, v in settings.sources.items() if k.startswith("retry.")} == {"argument retry"}


def test_environment_strings_are_parsed() -> None:
    environ = {
        "RATELIMIT_CLIENT_RATE": "3/5s",
        "RATELIMIT_CLIENT_BURST": " 2 ",
        "RATELIMIT_CLIENT_SERVER_COUNTING": "token_bucket",
        "RATELIMIT_CLIENT_MAX_WAIT": "none",
        "RATELIMIT_CLIENT_RETRY_RETRY_UNSAFE": "yes",
        "RATELIMIT_CLIENT_RETRY_FAILURE_ATTEMPTS": "7",
        "RATELIMIT_CLIENT_RETRY_RESET_FORMAT": "epoch_ms",
        "RATELIMIT_CLIENT_UNRELATED": "ignored",
    }
    settings = load_settings(environ=environ)
    assert settings.quota == Rate(3, 5)
    assert settings.burst == 2
    assert settings.server_counting == "token_bucket"
    assert settings.max_wait is None
    assert settings.retry.retry_unsafe is True
    assert settings.retry.failure_attempts == 7
    assert settings.retry.reset_format == "epoch_ms"


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("RATELIMIT_CLIENT_TEIR", "RATELIMIT_CLIENT_TIER"),
        ("RATELIMIT_CLIENT_MAXWAIT", "RATELIMIT_CLIENT_MAX_WAIT"),
        ("RATELIMIT_CLIENT_BACKOFF_MAX", "RATELIMIT_CLIENT_RETRY_BACKOFF_MAX"),
    ],
)
def test_a_misspelled_environment_variable_is_pointed_out(variable: str, meant: str) -> None:
    with pytest.warns(UserWarning, match=f"{variable} is not a ratelimit-client setting") as caught:
        settings = load_settings(environ={variable: "paid-secret-value"})
    assert f"did you mean {meant}?" in str(caught[0].message)
    assert "paid-secret-value" not in str(caught[0].message)  # the value is never echoed
    assert settings == load_settings(environ={})  # and it changed nothing


@pytest.mark.parametrize(
    ("text", "expected"), [("1", True), ("on", True), ("TRUE", True), ("0", False), ("off", False)]
)
def test_environment_booleans(text: str, expected: bool) -> None:
    settings = load_settings(environ={"RATELIMIT_CLIENT_RETRY_RETRY_UNSAFE": text})
    assert settings.retry.retry_unsafe is expected


def test_rate_overrides_the_tier() -> None:
    settings = load_settings(environ={}, tier="paid", rate="10/second")
    assert settings.quota == Rate(10, 1)


# --- the TOML file ----------------------------------------------------------------------


def test_file_by_argument(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('tier = "paid"\n')
    settings = load_settings(config_file=path, environ={})
    assert settings.quota == Rate(200, 60)
    assert settings.sources["tier"] == f"file {path}"


def test_file_by_environment_variable(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('tier = "paid"\n')
    settings = load_settings(environ={"RATELIMIT_CLIENT_CONFIG": str(path)})
    assert settings.tier == "paid"
    assert settings.sources["tier"] == f"file {path}"


def test_file_argument_beats_the_environment_variable(
    toml: typing.Callable[[str], pathlib.Path], tmp_path: pathlib.Path
) -> None:
    path = toml('tier = "paid"\n')
    settings = load_settings(config_file=path, environ={"RATELIMIT_CLIENT_CONFIG": str(tmp_path / "missing.toml")})
    assert settings.tier == "paid"


def test_a_full_file(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml(
        """
        tier = "team"
        burst = 2
        server_counting = "unknown"
        backend = "memory://"
        namespace = "acme"
        max_wait = 2.5

        [tiers]
        team = "1000/minute"

        [retry]
        throttle_attempts = 4
        throttle_timeout = 60
        failure_attempts = 12
        failure_timeout = 120.5
        backoff_base = 0.25
        backoff_max = 10
        max_server_wait = 90
        retry_unsafe = true
        retry_budget_ratio = 0.5
        reset_format = "delta"
        """
    )
    settings = load_settings(config_file=path, environ={})
    assert settings.quota == Rate(1000, 60)
    assert (settings.burst, settings.backend, settings.namespace, settings.max_wait) == (2, "memory://", "acme", 2.5)
    assert settings.retry == RetryPolicy(
        throttle_attempts=4,
        throttle_timeout=60,
        failure_attempts=12,
        failure_timeout=120.5,
        backoff_base=0.25,
        backoff_max=10,
        max_server_wait=90,
        retry_unsafe=True,
        retry_budget_ratio=0.5,
        reset_format="delta",
    )
    assert {k: v for k, v in settings.sources.items() if v != "default"}.keys() >= {
        "tier",
        "tiers",
        "retry.reset_format",
    }


# --- the tier table ---------------------------------------------------------------------


def test_adding_a_tier_keeps_the_defaults(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('tier = "team"\n[tiers]\nteam = "1000/minute"\n')
    settings = load_settings(config_file=path, environ={})
    assert dict(settings.tiers) == {"free": Rate(50, 60), "paid": Rate(200, 60), "team": Rate(1000, 60)}
    assert settings.quota == Rate(1000, 60)
    assert settings.sources["tiers.team"] == f"file {path}"
    assert settings.sources["tiers.free"] == "default"


def test_changing_a_tier(toml: typing.Callable[[str], pathlib.Path]) -> None:
    settings = load_settings(environ={"RATELIMIT_CLIENT_TIERS": "paid=300/min"}, tier="paid")
    assert settings.quota == Rate(300, 60)
    assert settings.tiers["free"] == Rate(50, 60)


def test_tier_tables_merge_tier_by_tier_across_sources(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('[tiers]\nteam = "1000/minute"\npaid = "250/minute"\n')
    environ = {"RATELIMIT_CLIENT_TIERS": "paid=300/minute, gold=5/second"}
    settings = load_settings(config_file=path, environ=environ, tiers={"gold": Rate(6, 1)})
    assert dict(settings.tiers) == {
        "free": Rate(50, 60),
        "paid": Rate(300, 60),
        "team": Rate(1000, 60),
        "gold": Rate(6, 1),
    }
    assert settings.sources["tiers.team"] == f"file {path}"
    assert settings.sources["tiers.paid"] == "environment RATELIMIT_CLIENT_TIERS"
    assert settings.sources["tiers.gold"] == "argument"


def test_a_tier_must_exist() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"RATELIMIT_CLIENT_TIER": "gold"})
    assert str(info.value) == (
        "invalid tier (environment RATELIMIT_CLIENT_TIER): 'gold' (expected one of free, paid, auto)"
    )


# --- every invalid value ----------------------------------------------------------------

ENV_ERRORS = [
    ("TIER", "", "tier"),
    ("TIER", "gold", "tier"),
    ("TIERS", "free", "tiers"),
    ("TIERS", ",", "tiers"),
    ("TIERS", "team=fast", "tiers.team"),
    ("TIERS", "=5/min", "tiers."),
    ("RATE", "fast", "rate"),
    ("RATE", "0/min", "rate"),
    ("BURST", "0", "burst"),
    ("BURST", "two", "burst"),
    ("BURST", "1.5", "burst"),
    ("SERVER_COUNTING", "sliding_log", "server_counting"),
    ("BACKEND", "ftp://example", "backend"),
    ("BACKEND", "memory", "backend"),
    ("NAMESPACE", "a b", "namespace"),
    ("NAMESPACE", "x" * 65, "namespace"),
    ("MAX_WAIT", "-1", "max_wait"),
    ("MAX_WAIT", "nan", "max_wait"),
    ("MAX_WAIT", "inf", "max_wait"),
    ("MAX_WAIT", "soon", "max_wait"),
    ("RETRY_THROTTLE_ATTEMPTS", "0", "retry.throttle_attempts"),
    ("RETRY_FAILURE_ATTEMPTS", "many", "retry.failure_attempts"),
    ("RETRY_THROTTLE_TIMEOUT", "-5", "retry.throttle_timeout"),
    ("RETRY_FAILURE_TIMEOUT", "inf", "retry.failure_timeout"),
    ("RETRY_BACKOFF_BASE", "nan", "retry.backoff_base"),
    ("RETRY_BACKOFF_MAX", "", "retry.backoff_max"),
    ("RETRY_MAX_SERVER_WAIT", "-0.1", "retry.max_server_wait"),
    ("RETRY_RETRY_UNSAFE", "maybe", "retry.retry_unsafe"),
    ("RETRY_RETRY_BUDGET_RATIO", "11", "retry.retry_budget_ratio"),
    ("RETRY_RESET_FORMAT", "iso", "retry.reset_format"),
]


@pytest.mark.parametrize(("variable", "value", "field"), ENV_ERRORS)
def test_every_invalid_environment_value_names_field_source_and_value(variable: str, value: str, field: str) -> None:
    name = f"RATELIMIT_CLIENT_{variable}"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value})
    assert info.value.field.startswith(field)
    assert info.value.field.endswith(f" (environment {name})")
    assert f"invalid {info.value.field}: " in str(info.value)
    assert "(expected " in str(info.value)
    # The offending text is quoted, except where it was already turned into a number.
    assert repr(value) in str(info.value) or repr(info.value.value) in str(info.value)


FILE_ERRORS = [
    ("tier = 5", "tier", 5),
    ('tier = ""', "tier", ""),
    ('tiers = "team"', "tiers", "team"),
    ("tiers = {}", "tiers", {}),
    ("tiers = 5", "tiers", 5),
    ('tiers = {team = "fast"}', "tiers.team", "fast"),
    ("tiers = {team = 5}", "tiers.team", 5),
    ("rate = 50", "rate", 50),
    ('rate = "50"', "rate", "50"),
    ("burst = 0", "burst", 0),
    ("burst = 1.5", "burst", 1.5),
    ("burst = true", "burst", True),
    ('server_counting = "leaky"', "server_counting", "leaky"),
    ("backend = 1", "backend", 1),
    ('backend = "ftp://x"', "backend", "ftp://x"),
    ("namespace = 7", "namespace", 7),
    ("max_wait = -1", "max_wait", -1),
    ("max_wait = nan", "max_wait", None),  # NaN: checked by field only (nan != nan)
    ("max_wait = true", "max_wait", True),
    ("retry = 5", "retry", 5),
    ("retry = {throttle_attempts = 0}", "retry.throttle_attempts", 0),
    ('retry = {throttle_attempts = "3"}', None, None),  # a TOML string is parsed like the environment's
    ("retry = {backoff_max = -1}", "retry.backoff_max", -1),
    ('retry = {retry_unsafe = "perhaps"}', "retry.retry_unsafe", "perhaps"),
    ("retry = {retry_budget_ratio = 20}", "retry.retry_budget_ratio", 20.0),
    ('retry = {reset_format = "iso"}', "retry.reset_format", "iso"),
]


@pytest.mark.parametrize(("text", "field"), [("retry = {attempts = 5}", "retry.attempts"), ("limits = 5", "limits")])
def test_an_unknown_file_key_is_named_without_its_value(
    toml: typing.Callable[[str], pathlib.Path], text: str, field: str
) -> None:
    # Its value may be a secret put in the wrong place (api_key = "..."): never echoed.
    path = toml(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert info.value.field == f"{field} (file {path})"
    assert str(info.value).startswith(f"invalid {field} (file {path}): <value not shown> (expected one of ")


@pytest.mark.parametrize(("text", "field", "value"), FILE_ERRORS)
def test_every_invalid_file_value_names_field_source_and_value(
    toml: typing.Callable[[str], pathlib.Path], text: str, field: str | None, value: object
) -> None:
    path = toml(text + "\n")
    if field is None:
        assert load_settings(config_file=path, environ={}).retry.throttle_attempts == 3
        return
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert info.value.field == f"{field} (file {path})"
    if value is not None:
        assert info.value.value == value
        assert f"invalid {field} (file {path}): {value!r} (expected " in str(info.value)


ARGUMENT_ERRORS: list[tuple[dict[str, typing.Any], str]] = [
    ({"tier": 5}, "tier"),
    ({"tier": "gold"}, "tier"),
    ({"tiers": {"team": "fast"}}, "tiers.team"),
    ({"tiers": []}, "tiers"),
    ({"rate": "fast"}, "rate"),
    ({"rate": 50}, "rate"),
    ({"burst": 0}, "burst"),
    ({"burst": True}, "burst"),
    ({"server_counting": "x"}, "server_counting"),
    ({"backend": "ftp://x"}, "backend"),
    ({"namespace": ""}, "namespace"),
    ({"max_wait": -1.0}, "max_wait"),
    ({"retry": {"throttle_attempts": 3}}, "retry"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("arguments", "field"), ARGUMENT_ERRORS)
def test_every_invalid_argument_names_field_and_value(arguments: dict[str, typing.Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, **arguments)
    assert info.value.field == field
    assert str(info.value).startswith(f"invalid {field}: {info.value.value!r} (expected ")


def test_unknown_file_key_lists_the_known_ones(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml("colour = 'blue'\n")
    with pytest.raises(ConfigError, match=r"expected one of adaptive, .*, backend, burst, .*, tiers, retry"):
        load_settings(config_file=path, environ={})


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert info.value.field == "config"
    assert info.value.value == str(path)
    assert "a readable TOML file (No such file or directory)" in str(info.value)


def test_missing_file_named_by_the_environment(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="a readable TOML file"):
        load_settings(environ={"RATELIMIT_CLIENT_CONFIG": str(path)})


def test_a_directory_is_not_a_config_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="a readable TOML file") as info:
        load_settings(config_file=tmp_path, environ={})
    assert info.value.field == "config"


@pytest.mark.parametrize("text", ["tier = ", "[retry\n", "tier = 'free'\ntier = 'paid'\n", "\x00"])
def test_invalid_toml(toml: typing.Callable[[str], pathlib.Path], text: str) -> None:
    path = toml(text)
    with pytest.raises(ConfigError, match=r"expected valid TOML \(") as info:
        load_settings(config_file=path, environ={})
    assert info.value.field == "config"
    assert info.value.value == str(path)


def test_invalid_utf8_toml(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"namespace = '\xe9'\n")
    with pytest.raises(ConfigError, match=r"expected valid TOML \(") as info:
        load_settings(config_file=path, environ={})
    assert info.value.field == "config"


def test_a_tier_argument_wins_over_a_rate_from_the_environment() -> None:
    settings = load_settings(environ={"RATELIMIT_CLIENT_RATE": "10/minute"}, tier="paid")
    assert settings.quota == Rate(200, 60)
    assert settings.rate is None
    assert settings.sources["rate"] == "not used: tier from argument takes precedence"
    # at the same level, the explicit rate wins
    both = load_settings(environ={}, tier="paid", rate="10/minute")
    assert both.quota == Rate(10, 60)


def test_auto_tier_starts_at_free_and_allows_discovery() -> None:
    settings = load_settings(environ={}, tier="auto")
    assert settings.quota == Rate(50, 60)
    assert settings.discover
    assert settings.adaptive_config().discover
    assert not load_settings(environ={}, tier="paid").discover


def test_adaptive_settings_from_every_source(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('adaptive = "headers"\nadaptive_ttl = 30\n[reset_formats]\n"api.github.com" = "epoch"\n')
    settings = load_settings(
        config_file=path, environ={"RATELIMIT_CLIENT_ADAPTIVE_FLOOR": "6/minute"}, adaptive_beta=0.5
    )
    config = settings.adaptive_config()
    assert (config.mode, config.ttl, config.beta, config.floor) == ("headers", 30.0, 0.5, 0.1)
    assert config.probe == 60.0  # one window of the quota
    assert settings.reset_formats == {"api.github.com": "epoch"}
    assert settings.sources["adaptive"].startswith("file ")
    assert settings.sources["adaptive_floor"] == "environment RATELIMIT_CLIENT_ADAPTIVE_FLOOR"
    assert settings.sources["adaptive_beta"] == "argument"


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"RATELIMIT_CLIENT_ADAPTIVE": "sometimes"}, "adaptive (environment RATELIMIT_CLIENT_ADAPTIVE)"),
        ({"RATELIMIT_CLIENT_ADAPTIVE_BETA": "1.5"}, "adaptive_beta (environment RATELIMIT_CLIENT_ADAPTIVE_BETA)"),
        ({"RATELIMIT_CLIENT_ADAPTIVE_BETA": "x"}, "adaptive_beta (environment RATELIMIT_CLIENT_ADAPTIVE_BETA)"),
        ({"RATELIMIT_CLIENT_ADAPTIVE_TTL": "-1"}, "adaptive_ttl (environment RATELIMIT_CLIENT_ADAPTIVE_TTL)"),
        ({"RATELIMIT_CLIENT_ADAPTIVE_FLOOR": "fast"}, "adaptive_floor (environment RATELIMIT_CLIENT_ADAPTIVE_FLOOR)"),
        (
            {"RATELIMIT_CLIENT_ADAPTIVE_DISCOVER": "maybe"},
            "adaptive_discover (environment RATELIMIT_CLIENT_ADAPTIVE_DISCOVER)",
        ),
        (
            {"RATELIMIT_CLIENT_RESET_FORMATS": "api=sometimes"},
            "reset_formats.api (environment RATELIMIT_CLIENT_RESET_FORMATS)",
        ),
        ({"RATELIMIT_CLIENT_RESET_FORMATS": "nonsense"}, "reset_formats (environment RATELIMIT_CLIENT_RESET_FORMATS)"),
    ],
)
def test_invalid_adaptive_values_name_the_field(environ: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert info.value.field == field


# --- values no float holds, whitespace, reserved names, overridden values ----------------

HUGE = 10**400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("max_wait", HUGE, id="max_wait"),
        pytest.param("adaptive_beta", HUGE, id="adaptive_beta"),
        pytest.param("adaptive_probe", HUGE, id="adaptive_probe"),
        pytest.param("adaptive_ttl", HUGE, id="adaptive_ttl"),
        pytest.param("burst", HUGE, id="burst"),
        pytest.param("burst", 1_000_001, id="burst-beyond-the-bound"),
        pytest.param("rate", Rate(1, 1e308), id="rate-window-beyond-the-bound"),
        pytest.param("adaptive_floor", Rate(1e-300, 1e7), id="floor-interval-beyond-the-bound"),
    ],
)
def test_numbers_too_big_name_the_field_and_the_value_given(field: str, value: object) -> None:
    arguments: dict[str, typing.Any] = {field: value}
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, **arguments)
    assert info.value.field == field
    assert info.value.value == value


def test_a_tier_beyond_the_rate_bound_is_named() -> None:
    with pytest.raises(ConfigError, match=r"at most 1,000,000,000 seconds") as info:
        load_settings(environ={}, tiers={"team": Rate(1, 1e308)})
    assert (info.value.field, info.value.value) == ("tiers.team", Rate(1, 1e308))


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("MAX_WAIT", "max_wait"),
        ("ADAPTIVE_BETA", "adaptive_beta"),
        ("ADAPTIVE_TTL", "adaptive_ttl"),
        ("BURST", "burst"),
        ("RETRY_FAILURE_TIMEOUT", "retry.failure_timeout"),
    ],
)
def test_a_huge_number_in_the_environment_is_quoted_as_given(variable: str, field: str) -> None:
    name = f"RATELIMIT_CLIENT_{variable}"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: "9" * 400})
    assert info.value.field == f"{field} (environment {name})"
    assert info.value.value == "9" * 400  # not inf, nor a 400-digit int turned into something else


@pytest.mark.parametrize(
    "field",
    ["throttle_timeout", "failure_timeout", "backoff_base", "backoff_max", "max_server_wait"],
)
def test_retry_policy_rejects_numbers_too_big_for_a_float(field: str) -> None:
    arguments: dict[str, typing.Any] = {field: HUGE}
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**arguments)
    assert info.value.field == f"retry.{field}"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("NAMESPACE", "ns\n", "namespace", "ns"),
        ("NAMESPACE", " ns ", "namespace", "ns"),
        ("SERVER_COUNTING", "token_bucket\n", "server_counting", "token_bucket"),
        ("ADAPTIVE", " headers ", "adaptive", "headers"),
    ],
)
def test_environment_text_is_stripped_like_the_tier(variable: str, value: str, field: str, expected: str) -> None:
    settings = load_settings(environ={f"RATELIMIT_CLIENT_{variable}": value})
    assert getattr(settings, field) == expected


def test_file_text_is_stripped_like_the_tier(toml: typing.Callable[[str], pathlib.Path]) -> None:
    path = toml('namespace = "acme "\nserver_counting = " unknown"\nadaptive = "off "\n[reset_formats]\napi = "delta "')
    settings = load_settings(config_file=path, environ={})
    assert (settings.namespace, settings.server_counting, settings.adaptive) == ("acme", "unknown", "off")
    assert settings.reset_formats == {"api": "delta"}


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("argument", "tiers"),
        ("environment", "tiers (environment RATELIMIT_CLIENT_TIERS)"),
        ("file", "tiers (file {path})"),
    ],
)
def test_auto_is_a_reserved_tier_name(toml: typing.Callable[[str], pathlib.Path], source: str, field: str) -> None:
    path = toml('[tiers]\nauto = "500/minute"\n')
    sources: dict[str, dict[str, typing.Any]] = {
        "argument": {"environ": {}, "tiers": {"auto": "500/minute"}},
        "environment": {"environ": {"RATELIMIT_CLIENT_TIERS": "team=5/s, auto=500/minute"}},
        "file": {"environ": {}, "config_file": path},
    }
    given = sources[source]
    with pytest.raises(ConfigError, match="'auto', which is reserved") as info:
        load_settings(tier="auto", **given)
    assert info.value.field == field.format(path=path)
    assert info.value.value == "auto"


@pytest.mark.parametrize(
    ("rate_from", "tier_from", "field"),
    [
        ("environment", "argument", "rate (environment RATELIMIT_CLIENT_RATE)"),
        ("file", "argument", "rate (file {path})"),
        ("file", "environment", "rate (file {path})"),
    ],
)
def test_a_rate_the_tier_overrides_is_still_validated(
    toml: typing.Callable[[str], pathlib.Path], rate_from: str, tier_from: str, field: str
) -> None:
    # The tier wins (it was given at a higher precedence), but a broken rate is a mistake all the same.
    path = toml('rate = "garbage"\n')
    environ = {"RATELIMIT_CLIENT_RATE": "garbage"} if rate_from == "environment" else {}
    if tier_from == "environment":
        environ["RATELIMIT_CLIENT_TIER"] = "paid"
    arguments: dict[str, typing.Any] = {"tier": "paid"} if tier_from == "argument" else {}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, config_file=path if rate_from == "file" else None, **arguments)
    assert info.value.field == field.format(path=path)
    assert info.value.value == "garbage"


@pytest.mark.parametrize(
    ("config_file", "field"),
    [(5, "config_file"), (["a.toml"], "config_file"), ("a\0b.toml", "config")],
)
def test_a_config_file_that_is_no_path_names_the_field(config_file: typing.Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config_file, environ={})
    assert info.value.field == field


# --- the transports' own options ---------------------------------------------------------


def test_a_backend_object_wins_over_the_environment_and_the_file(
    toml: typing.Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATELIMIT_CLIENT_BACKEND", "bogus://x")
    monkeypatch.setenv("RATELIMIT_CLIENT_CONFIG", str(toml('backend = "ftp://y"\n')))
    backend = MemoryBackend()
    with RateLimitTransport(backend=backend) as transport:
        assert transport._shared.backend is backend
        assert transport.settings.backend == "<MemoryBackend>"
        assert transport.settings.sources["backend"] == "argument"


@pytest.mark.parametrize("table", [{"team": "1000/minute"}, types.MappingProxyType({"team": Rate(1000, 60)})])
def test_the_tier_table_is_a_transport_option(table: typing.Mapping[str, str | Rate]) -> None:
    with RateLimitTransport(backend="memory://", tiers=table, tier="team") as transport:
        assert transport.settings.quota == Rate(1000, 60)
        assert transport.settings.sources["tiers.team"] == "argument"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"api_key": 123}, "api_key", id="api_key-int"),
        pytest.param({"api_key": b"k-secret"}, "api_key", id="api_key-bytes"),
        pytest.param({"api_key": "k-secret\ud800"}, "api_key", id="api_key-not-utf8"),
        pytest.param({"limits": ["1000/hour"]}, "limits[0]", id="limits-of-text"),
        pytest.param({"limits": [Limit("1/s"), None]}, "limits[1]", id="limits-with-none"),
        pytest.param({"limits": Limit("10/s")}, "limits", id="limits-one-limit"),
        pytest.param({"limits": "10/s"}, "limits", id="limits-text"),
        pytest.param({"spool_threshold": True}, "spool_threshold", id="spool_threshold-bool"),
        pytest.param({"on_event": "print"}, "on_event", id="on_event-not-callable"),
        pytest.param({"config_file": 5}, "config_file", id="config_file-int"),
        pytest.param({"config_file": "a\0b.toml"}, "config", id="config_file-nul"),
        pytest.param({"ip": 5}, "ip", id="ip-int"),
        pytest.param({"ip": "my laptop"}, "ip", id="ip-not-an-address"),
        pytest.param({"burst": 10**400, "server_counting": "token_bucket"}, "burst", id="burst-huge"),
    ],
)
def test_every_invalid_transport_option_is_a_config_error_at_construction(
    options: dict[str, typing.Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimitTransport(backend="memory://", **options)
    assert info.value.field == field
    assert "k-secret" not in str(info.value)  # an API key is never shown


@pytest.mark.parametrize("burst", [pytest.param(1_000_001, id="bound+1"), pytest.param(HUGE, id="10**400")])
def test_a_limit_burst_beyond_the_bound_is_rejected(burst: int) -> None:
    with pytest.raises(ConfigError, match=r"expected an integer from 1 to 1000000\)") as info:
        Limit("10/s", burst=burst)
    assert info.value.field == "limit.burst"
