"""Settings from arguments, environment variables and a TOML file, with where each came from.

Precedence: arguments > environment (``RATELIMIT_CLIENT_*``) > file > defaults. Every
invalid value raises :class:`ConfigError` naming the field, where it came from, the value
and what is allowed.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import difflib
import math
import os
import re
import sys
import typing
import warnings

from ._adaptive import AdaptiveConfig, AdaptiveMode
from ._exceptions import ConfigError
from ._headers import ResetFormat
from ._rate import DEFAULT_TIERS, Rate, ServerCounting, check_burst, pacing_for, parse_rate
from ._retry import RetryPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "RATELIMIT_CLIENT_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_BACKEND = "sqlite://"
AUTO_TIER = "auto"  # start at the free tier's rate and learn the real quota from the server
_RESET_FORMATS = ("auto", "epoch", "epoch_ms", "delta")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # fullmatch: `$` also matches before a final newline
_SECONDS = "a finite number of seconds, 0 or more"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. ``sources`` maps each field to where its value came from."""

    tier: str = "free"
    tiers: typing.Mapping[str, Rate] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TIERS))
    rate: Rate | None = None
    burst: int | None = None
    server_counting: ServerCounting = "unknown"
    backend: str = DEFAULT_BACKEND
    namespace: str = "ratelimit-client"
    max_wait: float | None = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    adaptive: AdaptiveMode = "full"
    adaptive_beta: float = 0.7
    adaptive_probe: float | None = None
    adaptive_floor: Rate | None = None
    adaptive_ttl: float = 600.0
    adaptive_discover: bool = False
    reset_formats: typing.Mapping[str, ResetFormat] = dataclasses.field(default_factory=dict)
    sources: typing.Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        # The backend URL may hold a Redis password; the dataclass repr would show it.
        from ._backends import shown_url  # noqa: PLC0415 - backends import config types

        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"backend": shown_url(self.backend)}
        return f"{type(self).__qualname__}({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def quota(self) -> Rate:
        """The server's limit: ``rate`` when given, else the tier's rate (``auto``: the free tier's)."""
        if self.rate is not None:
            return self.rate
        return self.tiers["free" if self.tier == AUTO_TIER else self.tier]

    @property
    def discover(self) -> bool:
        """Whether the learned rate may rise above the configured one."""
        return self.adaptive_discover or (self.tier == AUTO_TIER and self.rate is None)

    def adaptive_config(self) -> AdaptiveConfig:
        """The learning controller's settings; rates in requests per second."""
        return AdaptiveConfig(
            mode=self.adaptive,
            beta=self.adaptive_beta,
            # By default the rate climbs back to where it was within one window of the quota.
            probe=self.adaptive_probe if self.adaptive_probe is not None else self.quota.per_seconds,
            floor=None if self.adaptive_floor is None else self.adaptive_floor.per_second,
            ttl=self.adaptive_ttl,
            discover=self.discover,
        )

    def pacing_rate(self) -> float:
        """Requests per second the client paces the quota at (the learned rate's ceiling)."""
        return pacing_for(self.quota, burst=self.burst, server=self.server_counting).rate.per_second


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, value, "a non-empty string")
    return value.strip()


def _int(field: str, value: object) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(field, value, "an integer of at least 1") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(field, value, "an integer of at least 1")
    return value


def _burst(field: str, value: object) -> int:
    number = value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # text that is no integer is refused below
            number = int(value.strip())
    try:
        return check_burst(number, field=field)
    except ConfigError as exc:  # quote the text as given, not an int made of it
        raise ConfigError(field, value, exc.allowed) from None


def _float(field: str, value: object, allowed: str) -> float:
    """``value`` (a number, or its text) as a finite float; errors quote it as given."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(field, value, allowed) from None
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        raise ConfigError(field, value, allowed)
    try:
        number = float(number)
    except OverflowError:  # an int beyond a float's range
        raise ConfigError(field, value, allowed) from None
    if not math.isfinite(number):
        raise ConfigError(field, value, allowed)
    return number


def _seconds(field: str, value: object) -> float:
    seconds = _float(field, value, _SECONDS)
    if seconds < 0:
        raise ConfigError(field, value, _SECONDS)
    return seconds


def _optional_seconds(field: str, value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return _seconds(field, value)


def _bool(field: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(field, value, "true or false")


def _stripped(value: object) -> object:
    # Text from the environment or a file often ends in a newline or a stray space.
    return value.strip() if isinstance(value, str) else value


def _counting(field: str, value: object) -> ServerCounting:
    choice = _stripped(value)
    if choice in ("unknown", "token_bucket"):
        return choice
    raise ConfigError(field, value, "'unknown' or 'token_bucket'")


def _namespace(field: str, value: object) -> str:
    namespace = _stripped(value)
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError(field, value, "1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return namespace


def _backend(field: str, value: object) -> str:
    from ._backends import check_url  # noqa: PLC0415 - backends import config types

    if not isinstance(value, str):
        raise ConfigError(field, value, "a backend URL")
    check_url(value, field=field)
    return value


def _tiers(field: str, value: object) -> dict[str, Rate]:
    if isinstance(value, str):
        # Environment form: "free=50/minute, team=1000/minute".
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(field, value, "'name=rate' pairs separated by commas")
        value = {name.strip(): rate.strip() for name, _, rate in pairs}
    if not isinstance(value, collections.abc.Mapping) or not value:
        raise ConfigError(field, value, "a table of tier names to rates")
    tiers = {_text(f"{field}.{name}", name): parse_rate(rate, field=f"{field}.{name}") for name, rate in value.items()}
    if AUTO_TIER in tiers:  # a tier by that name could never be chosen
        raise ConfigError(field, AUTO_TIER, f"tier names other than {AUTO_TIER!r}, which is reserved (learn the quota)")
    return tiers


def _mode(field: str, value: object) -> AdaptiveMode:
    mode = _stripped(value)
    if mode in ("off", "headers", "full"):
        return mode
    raise ConfigError(field, value, "'off', 'headers' or 'full'")


def _number(field: str, value: object) -> float:
    return _float(field, value, "a finite number")


def _optional_rate(field: str, value: object) -> Rate | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return parse_rate(typing.cast("str", value), field=field)


def _reset_formats(field: str, value: object) -> dict[str, ResetFormat]:
    if isinstance(value, str):
        # Environment form: "api.github.com=epoch, api.example=delta".
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(field, value, "'host=format' pairs separated by commas")
        value = {host.strip(): fmt.strip() for host, _, fmt in pairs}
    if not isinstance(value, dict):
        raise ConfigError(field, value, "a table of host names to reset formats")
    formats: dict[str, ResetFormat] = {}
    for host, given in value.items():
        fmt = _stripped(given)
        if fmt not in _RESET_FORMATS:
            raise ConfigError(_nested(field, host), given, f"one of {', '.join(_RESET_FORMATS)}")
        formats[_text(_nested(field, host), host).lower()] = typing.cast("ResetFormat", fmt)
    return formats


def _nested(label: str, name: str) -> str:
    # "reset_formats (environment X)" and "api" -> "reset_formats.api (environment X)"
    field, sep, source = label.partition(" (")
    return f"{field}.{name}{sep}{source}"


_PARSERS: dict[str, typing.Callable[[str, object], object]] = {
    "tier": _text,
    "tiers": _tiers,
    "rate": lambda field, value: parse_rate(typing.cast("str", value), field=field),
    "burst": _burst,
    "server_counting": _counting,
    "backend": _backend,
    "namespace": _namespace,
    "max_wait": _optional_seconds,
    "adaptive": _mode,
    "adaptive_beta": _number,
    "adaptive_probe": _optional_seconds,
    "adaptive_floor": _optional_rate,
    "adaptive_ttl": _seconds,
    "adaptive_discover": _bool,
    "reset_formats": _reset_formats,
}


def _retry_parser(name: str) -> typing.Callable[[str, object], object]:
    default = getattr(RetryPolicy(), name)
    if isinstance(default, bool):
        return _bool
    if isinstance(default, int):
        return _int
    if isinstance(default, float):
        return _seconds
    return _text


_RETRY_FIELDS = {f.name: _retry_parser(f.name) for f in dataclasses.fields(RetryPolicy)}


Raw = dict[str, tuple[object, str]]  # field -> (value as given, where it came from)


class _NotShown:
    """Stands in a :class:`ConfigError` for the value of an unknown key, which may be a secret
    (``api_key = …`` in a file, a misspelt keyword)."""

    def __repr__(self) -> str:
        return "<value not shown>"


_NOT_SHOWN = _NotShown()


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
    **arguments: object,
) -> Settings:
    """Resolve settings: ``arguments`` (None means "not given") > ``environ`` > file > defaults.

    ``arguments`` take the :class:`Settings` field names, and ``retry`` (a
    :class:`RetryPolicy`). ``environ`` defaults to ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    layers: list[Raw] = [{}, {}, {}]  # file, environment, arguments
    retry_raw: Raw = {}
    path = config_file if config_file is not None else environ.get(CONFIG_ENV)
    if path:
        _from_file(_config_path(path), layers[0], retry_raw)
    _from_environment(environ, layers[1], retry_raw)
    _from_arguments(arguments, layers[2], retry_raw)
    raw: Raw = {name: item for layer in layers for name, item in layer.items()}
    rate_overridden = _tier_overrides_rate(layers)
    if rate_overridden:
        # Not used, but a broken rate is a mistake all the same: say so now, not when the tier goes.
        value, source = raw.pop("rate")
        _PARSERS["rate"](_label("rate", source), value)

    values = {
        name: _PARSERS[name](_label(name, source), value) for name, (value, source) in raw.items() if name != "tiers"
    }
    # Tier tables add to the defaults and to each other, tier by tier, so a file adding
    # "team" does not drop "free" nor undo an environment variable changing "paid".
    tiers, tier_sources = dict(DEFAULT_TIERS), dict.fromkeys(DEFAULT_TIERS, "default")
    for layer in layers:
        if "tiers" in layer:
            value, source = layer["tiers"]
            try:
                table = _tiers("tiers", value)
            except ConfigError as exc:  # name the tier ("tiers.team") before the source
                raise ConfigError(_label(exc.field, source), exc.value, exc.allowed) from None
            tiers |= table
            tier_sources |= dict.fromkeys(table, source)
    retry_values = {
        name: _RETRY_FIELDS[name](_label(f"retry.{name}", source), value) for name, (value, source) in retry_raw.items()
    }
    try:
        retry = RetryPolicy(**retry_values)  # type: ignore[arg-type]
    except ConfigError as exc:
        # RetryPolicy checks ranges the parsers cannot; say where the value came from.
        given = retry_raw.get(exc.field.removeprefix("retry."))
        if given is None:
            raise
        raise ConfigError(_label(exc.field, given[1]), exc.value, exc.allowed) from None
    settings = Settings(retry=retry, tiers=tiers, **values)  # type: ignore[arg-type]
    if settings.tier not in settings.tiers and settings.tier != AUTO_TIER:
        source = raw["tier"][1] if "tier" in raw else "default"
        allowed = ", ".join([*sorted(settings.tiers), AUTO_TIER])
        raise ConfigError(_label("tier", source), settings.tier, f"one of {allowed}")
    try:
        settings.adaptive_config()
    except ConfigError as exc:
        given = raw.get(exc.field)
        raise ConfigError(_label(exc.field, given[1]) if given else exc.field, exc.value, exc.allowed) from None
    sources = {f.name: "default" for f in dataclasses.fields(Settings) if f.name not in ("retry", "sources")}
    sources |= {f"retry.{name}": "default" for name in _RETRY_FIELDS}
    sources |= {name: source for name, (_, source) in raw.items()}
    if rate_overridden:
        sources["rate"] = f"not used: tier from {raw['tier'][1]} takes precedence"
    sources |= {f"tiers.{name}": source for name, source in tier_sources.items()}
    sources |= {f"retry.{name}": source for name, (_, source) in retry_raw.items()}
    return dataclasses.replace(settings, sources=sources)


def _tier_overrides_rate(layers: list[Raw]) -> bool:
    """A tier given at a higher precedence than a rate wins over it (arguments over environment)."""
    level = {name: index for index, layer in enumerate(layers) for name in layer}
    return "tier" in level and "rate" in level and level["tier"] > level["rate"]


def _config_path(path: object) -> str | os.PathLike[str]:
    """``path`` if ``open`` can take it as a file's name, else ConfigError."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ConfigError("config_file", path, "the path of a TOML file")
    if "\0" in os.fsdecode(path):
        raise ConfigError("config", os.fspath(path), "a readable TOML file (the path has a NUL character)")
    return typing.cast("str | os.PathLike[str]", path)


def _label(field: str, source: str) -> str:
    return field if source.startswith("argument") else f"{field} ({source})"


def _from_file(path: str | os.PathLike[str], raw: Raw, retry_raw: Raw) -> None:
    source = f"file {os.fspath(path)}"
    for key, value in _read_toml(path).items():
        if key == "retry":
            if not isinstance(value, dict):
                raise ConfigError(f"retry ({source})", value, "a table")
            for name, item in value.items():
                if name not in _RETRY_FIELDS:
                    raise ConfigError(f"retry.{name} ({source})", _NOT_SHOWN, f"one of {', '.join(_RETRY_FIELDS)}")
                retry_raw[name] = (item, source)
        elif key in _PARSERS:
            raw[key] = (value, source)
        else:
            raise ConfigError(f"{key} ({source})", _NOT_SHOWN, f"one of {', '.join(sorted(_PARSERS))}, retry")


def _from_environment(environ: typing.Mapping[str, str], raw: Raw, retry_raw: Raw) -> None:
    for name in _PARSERS:
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in environ:
            raw[name] = (environ[variable], f"environment {variable}")
    for name in _RETRY_FIELDS:
        variable = f"{ENV_PREFIX}RETRY_{name.upper()}"
        if variable in environ:
            retry_raw[name] = (environ[variable], f"environment {variable}")
    _warn_of_misspellings(environ)


def _warn_of_misspellings(environ: typing.Mapping[str, str]) -> None:
    # Other tools may use the prefix too, so an unknown name is no error; but one close to
    # a setting's name is most likely a typo that would silently leave the default.
    known = [name.upper() for name in _PARSERS] + [f"RETRY_{name.upper()}" for name in _RETRY_FIELDS]
    known.append(CONFIG_ENV.removeprefix(ENV_PREFIX))
    for variable in environ:
        suffix = variable.removeprefix(ENV_PREFIX)
        if suffix == variable or suffix in known:
            continue
        close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.75)
        if close:
            warnings.warn(
                f"{variable} is not a ratelimit-client setting and is ignored; did you mean {ENV_PREFIX}{close[0]}?",
                UserWarning,
                stacklevel=4,
            )


def _from_arguments(arguments: typing.Mapping[str, object], raw: Raw, retry_raw: Raw) -> None:
    for name, value in arguments.items():
        if value is None:
            continue
        if name == "retry":
            if not isinstance(value, RetryPolicy):
                raise ConfigError("retry", value, "a RetryPolicy")
            # A policy object is given whole: it replaces every retry field.
            retry_raw.clear()
            retry_raw.update({f: (getattr(value, f), "argument retry") for f in _RETRY_FIELDS})
        elif name in _PARSERS:
            raw[name] = (value, "argument")
        else:
            raise ConfigError(name, _NOT_SHOWN, f"one of {', '.join(sorted(_PARSERS))}, retry")


def _read_toml(path: str | os.PathLike[str]) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError("config", os.fspath(path), f"a readable TOML file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8 only
        raise ConfigError("config", os.fspath(path), f"valid TOML ({exc})") from None
