"""``ConfigOptions``: SmartRedis's named integer and string settings, read from the
environment (``NAME`` or ``NAME_<suffix>``) and overridable in code."""

from __future__ import annotations

import os

from memstore.smartredis.error import RedisKeyError, RedisRuntimeError
from memstore.smartredis.util import typecheck

__all__ = ["ConfigOptions"]


class ConfigOptions:
    """Settings for a ``Client``; make one with ``create_from_environment(suffix)`` or
    ``create_from_default()`` (a bare ``ConfigOptions()`` is unusable, as in SmartRedis)."""

    def __init__(self) -> None:
        self._suffix: str | None = None  # None: not made by a factory
        self._overrides: dict[str, int | str] = {}

    def __repr__(self) -> str:
        return f"ConfigOptions(suffix={self._suffix!r}, overrides={self._overrides!r})"

    @classmethod
    def create_from_environment(cls, db_suffix: str) -> ConfigOptions:
        """Options read from environment variables, ``NAME_<db_suffix>`` when a suffix is given."""
        typecheck(db_suffix, "db_suffix", str)
        options = cls()
        options._suffix = db_suffix
        return options

    @classmethod
    def create_from_default(cls) -> ConfigOptions:
        """Options from the environment without a suffix (SmartRedis's defaults)."""
        return cls.create_from_environment("")

    def _lookup(self, option_name: str) -> int | str | None:
        if self._suffix is None:
            raise RedisRuntimeError(
                "this ConfigOptions was not made by a factory: use "
                "ConfigOptions.create_from_environment(suffix)"
            )
        typecheck(option_name, "option_name", str)
        if option_name in self._overrides:
            return self._overrides[option_name]
        variable = f"{option_name}_{self._suffix}" if self._suffix else option_name
        return os.environ.get(variable)

    def get_integer_option(self, option_name: str) -> int:
        """The integer option ``option_name``; RedisKeyError when it is not set."""
        value = self._lookup(option_name)
        if value is None:
            raise RedisKeyError(f"option {option_name!r} is not configured")
        try:
            return int(value)
        except ValueError:
            raise RedisRuntimeError(
                f"option {option_name!r} is {value!r}, not an integer"
            ) from None

    def get_string_option(self, option_name: str) -> str:
        """The string option ``option_name``; RedisKeyError when it is not set."""
        value = self._lookup(option_name)
        if value is None:
            raise RedisKeyError(f"option {option_name!r} is not configured")
        return str(value)

    def is_configured(self, option_name: str) -> bool:
        """Whether ``option_name`` is set (in the environment or by an override)."""
        return self._lookup(option_name) is not None

    def override_integer_option(self, option_name: str, value: int) -> None:
        """Set integer option ``option_name`` for this object, whatever the environment says."""
        self._lookup(option_name)
        typecheck(value, "value", int)
        self._overrides[option_name] = value

    def override_string_option(self, option_name: str, value: str) -> None:
        """Set string option ``option_name`` for this object, whatever the environment says."""
        self._lookup(option_name)
        typecheck(value, "value", str)
        self._overrides[option_name] = value
