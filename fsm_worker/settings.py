"""Layered configuration for the CLI: command-line flags, then `FSM_WORKER_*` variables, then a TOML file.

A TOML file (`--settings FILE` or `FSM_WORKER_SETTINGS`) may hold keys at the top level and in a table per
command (`[server]`, `[worker]`, `[submit]`, ...); the command's table wins over the top level. Keys are
the long flag names with `_` for `-` (`reservation_timeout = 10`).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "FSM_WORKER_"
T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names its source."""


def load_toml(path: str | Path | None, command: str) -> dict[str, Any]:
    """The TOML settings that apply to `command` (empty when there is no file)."""
    path = path or os.environ.get(f"{ENV_PREFIX}SETTINGS")
    if not path:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"config file {path}: {error}") from None
    top = {key: value for key, value in data.items() if not isinstance(value, dict)}
    section = data.get(command, {})
    return {**top, **(section if isinstance(section, dict) else {})}


class Settings:
    """Looks each setting up in the flags, the environment and the TOML file, in that order."""

    def __init__(self, args: argparse.Namespace, toml: Mapping[str, Any]) -> None:
        self.args = args
        self.toml = toml

    def get(self, name: str, default: T, cast: Callable[[Any], T] | None = None) -> T:
        convert: Callable[[Any], Any] = cast or (type(default) if default is not None else str)
        flag = getattr(self.args, name, None)
        env_name = ENV_PREFIX + name.upper()
        if flag is not None and flag != []:
            value, source = flag, f"--{name.replace('_', '-')}"
        elif env_name in os.environ:
            value, source = os.environ[env_name], env_name
        elif name in self.toml:
            value, source = self.toml[name], f"{name} in the settings file"
        else:
            return default
        try:
            result: T = convert(value)
            return result
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{source}: {error}") from None

    def get_list(self, name: str) -> list[str]:
        """A list setting: a repeated flag, a comma-separated variable, or a TOML array."""
        return self.get(name, list[str](), as_list)


def as_list(value: Any) -> list[str]:
    """A list from a repeated flag, a comma-separated string, or a TOML array."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def optional(cast: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """`cast`, letting an empty value or "none" mean unset."""

    def convert(value: Any) -> T | None:
        if value is None or str(value).strip().lower() in ("", "none"):
            return None
        return cast(value)

    return convert
