"""Settings derived from the attrs config classes: one default, one help text, three ways to set it.

Every field of a config class (`WorkerConfig`, `ServerConfig`, `ClientTimeouts`, ...) is a setting. Its name
gives the flag (`--reservation-timeout`), the variable (`FSM_WORKER_RESERVATION_TIMEOUT`) and the TOML key
(`reservation_timeout`); its default and its `help` come from the field. Precedence: flag, then variable,
then the TOML file (`--settings FILE` or `FSM_WORKER_SETTINGS`), then the field's default.

A TOML file may hold keys at the top level and in a table per command (`[server]`, `[worker]`, ...); the
command's table wins over the top level.

Field metadata read here (all optional but `help`): `help` (one line), `name` (setting name instead of the
field name), `aliases` (extra flags), `scale` (the setting is in units of `scale`, e.g. MiB for a byte count),
`default_text` (how a computed default is shown), `cli` (False: not a setting), `secret` (never shown).
"""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

ENV_PREFIX = "FSM_WORKER_"
T = TypeVar("T")
C = TypeVar("C")


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


# --- value readers ----------------------------------------------------------------------------------------


def as_list(value: Any) -> list[str]:
    """A list from a repeated flag, a comma-separated string, or a TOML array."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    items: list[str] = []
    for item in value:
        items.extend(as_list(item) if isinstance(item, str) else [str(item)])
    return items


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


def _number(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not a whole number: {value!r}")
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"not a {'whole ' if kind is int else ''}number: {value!r}") from None

    return convert


# --- settings derived from a config class -----------------------------------------------------------------


@attrs.frozen
class Setting:
    """One field of a config class as a setting."""

    owner: type
    field: str
    name: str
    help: str
    kind: str  # "int", "float", "str", "path", "bool", "list", "choice"
    optional: bool
    required: bool
    default: Any
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    scale: int = 1
    default_text: str | None = None
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def convert(self, value: Any) -> Any:
        """The field's value from a raw flag, variable or TOML value."""
        if self.optional and (value is None or str(value).strip().lower() in ("", "none")):
            return None
        if self.kind == "list":
            return tuple(as_list(value))
        if self.kind == "bool":
            return as_bool(value)
        if self.kind == "choice":
            text = str(value)
            if text not in self.choices:
                raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
            return text
        if self.kind in ("int", "float"):
            number = _number(int if self.kind == "int" else float)(value)
            return number * self.scale if self.scale != 1 else number
        if self.kind == "path":
            return Path(str(value)).expanduser()
        return str(value)

    def shown_default(self) -> str:
        """The default as the docs and `--help` show it."""
        if self.default_text is not None:
            return self.default_text
        if self.required:
            return "required"
        value = self.default
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple | list):
            return ", ".join(map(str, value)) or "none"
        if self.scale != 1 and isinstance(value, int | float):
            value = value / self.scale
            value = int(value) if float(value).is_integer() else value
        return str(value)


def _kind(hint: Any) -> tuple[str, bool, tuple[str, ...]]:
    """(kind, optional, choices) of a field's type; ValueError for a type no setting can hold."""
    optional_ = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) != 1:
            raise ValueError(f"unsupported setting type {hint!r}")
        optional_, hint, origin = True, args[0], typing.get_origin(args[0])
    if origin is Literal:
        return "choice", optional_, tuple(str(arg) for arg in typing.get_args(hint))
    if origin in (tuple, list) and all(arg in (str, Ellipsis) for arg in typing.get_args(hint)):
        return "list", optional_, ()
    simple = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    if hint in simple:
        return simple[hint], optional_, ()
    raise ValueError(f"unsupported setting type {hint!r}")


def settings_of(cls: type, *, exclude: Iterable[str] = ()) -> list[Setting]:
    """The settings of an attrs config class, in field order (fields with `cli=False` left out)."""
    hints = typing.get_type_hints(cls)
    skipped = set(exclude)
    found: list[Setting] = []
    for field in attrs.fields(cls):
        meta = field.metadata
        if field.name in skipped or meta.get("cli") is False or not field.init:
            continue
        try:
            kind, optional_, choices = _kind(hints[field.name])
        except ValueError as error:
            raise TypeError(f"{cls.__name__}.{field.name}: {error} (set metadata cli=False)") from None
        has_default = field.default is not attrs.NOTHING
        is_factory = isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        default = None if not has_default or is_factory else field.default
        found.append(
            Setting(
                owner=cls,
                field=field.name,
                name=meta.get("name", field.name),
                help=meta.get("help", ""),
                kind=kind,
                optional=optional_,
                required=not has_default,
                default=default,
                choices=choices,
                aliases=tuple(meta.get("aliases", ())),
                scale=int(meta.get("scale", 1)),
                default_text=meta.get("default_text", "computed" if is_factory else None),
                secret=bool(meta.get("secret", False)),
            )
        )
    return found


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """One flag per setting; values stay raw strings (converted, with their source, by `Settings.build`)."""
    for item in settings:
        shown = "required" if item.required else f"default: {item.shown_default()}"
        text = f"{item.help} ({shown})" if item.required or not item.secret else item.help
        flags = (item.flag, *item.aliases)
        dest = item.name
        if item.kind == "bool":
            parser.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, help=text)
        elif item.kind == "list":
            parser.add_argument(*flags, dest=dest, action="append", help=text + "; repeat for several")
        elif item.kind == "choice":
            parser.add_argument(*flags, dest=dest, choices=item.choices, help=text)
        else:
            parser.add_argument(*flags, dest=dest, metavar=item.name.upper(), help=text)


class Settings:
    """Looks each setting up in the flags, the environment and the TOML file, in that order."""

    def __init__(self, args: argparse.Namespace, toml: Mapping[str, Any]) -> None:
        self.args = args
        self.toml = toml

    def lookup(self, name: str) -> tuple[Any, str] | None:
        """(raw value, where it came from), or None when it is set nowhere."""
        flag = getattr(self.args, name, None)
        env_name = ENV_PREFIX + name.upper()
        if flag is not None and flag != []:
            return flag, f"--{name.replace('_', '-')}"
        if env_name in os.environ:
            return os.environ[env_name], env_name
        if name in self.toml:
            return self.toml[name], f"{name} in the settings file"
        return None

    def get(self, name: str, default: T, cast: Callable[[Any], T] | None = None) -> T:
        convert: Callable[[Any], Any] = cast or (type(default) if default is not None else str)
        found = self.lookup(name)
        if found is None:
            return default
        value, source = found
        try:
            result: T = convert(value)
            return result
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{source}: {error}") from None

    def get_list(self, name: str) -> list[str]:
        """A list setting: a repeated flag, a comma-separated variable, or a TOML array."""
        return self.get(name, list[str](), as_list)

    def values(self, settings: Iterable[Setting]) -> dict[str, Any]:
        """The field values that are set somewhere, converted; a missing required one is an error."""
        values: dict[str, Any] = {}
        for item in settings:
            found = self.lookup(item.name)
            if found is None:
                if item.required:
                    raise SettingsError(
                        f"{item.flag} is required (or {item.env}, or {item.name} in the settings file)"
                    )
                continue
            raw, source = found
            try:
                values[item.field] = item.convert(raw)
            except (TypeError, ValueError) as error:
                raise SettingsError(f"{source}: {error}") from None
        return values

    def build(self, cls: Callable[..., C], settings: Iterable[Setting], **fixed: Any) -> C:
        """An instance of `cls` from the settings found (the class's defaults for the rest)."""
        values = self.values(item for item in settings if item.field not in fixed)
        try:
            return cls(**values, **fixed)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{getattr(cls, '__name__', cls)}: {error}") from None
