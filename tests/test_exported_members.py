"""The public API is exactly ``ratelimit_client.__all__`` (after httpx's test of the same name)."""

from __future__ import annotations

import types

import ratelimit_client


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted() -> None:
    assert ratelimit_client.__all__ == sorted(ratelimit_client.__all__, key=_isort_style)


def test_all_is_exactly_the_public_names() -> None:
    # Public subpackages (ratelimit_client.server) appear once something imports them;
    # they are modules of their own, not names re-exported here.
    public = {
        name
        for name, value in vars(ratelimit_client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(ratelimit_client.__all__) == public
    assert len(ratelimit_client.__all__) == len(public)


def test_every_exported_name_is_defined_in_the_package() -> None:
    for name in ratelimit_client.__all__:
        member = getattr(ratelimit_client, name)
        module = getattr(member, "__module__", None)
        # Type aliases (Literal[...]) and mappings carry no module of ours: skip those.
        if module is not None and not module.startswith("typing"):
            assert module.startswith("ratelimit_client"), (name, module)


def test_version() -> None:
    assert isinstance(ratelimit_client.__version__, str)
    assert ratelimit_client.__version__.count(".") == 2
