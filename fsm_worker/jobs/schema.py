"""Declarative job config: an attrs class whose fields say how to read and check each client value.

```python
@attrs.frozen
class Config:
    epochs: int = integer(10, 1, 1000, "passes over the data")
    model: str = choice("unet", ("unet", "convnext"))
```

``parse_config(Config, mapping)`` validates at request time (unknown fields are refused with the allowed
ones listed); ``describe_schema(Config)`` is the JSON-able description a worker publishes in discovery.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import attrs

from fsm_worker.jobs.config import (
    check_config_keys,
    get_bool,
    get_choice,
    get_float,
    get_int,
    get_name,
    get_string,
)
from fsm_worker.jobs.spec import JobConfigError

SCHEMA_KEY = "fsm_worker.schema"
T = TypeVar("T")


@attrs.frozen
class FieldSpec:
    """How one config field is read: ``kind`` is integer, number, boolean, choice, string or name."""

    kind: str
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_chars: int = 1000
    optional: bool = False

    def read(self, config: Mapping[str, Any], name: str, default: Any) -> Any:
        if self.optional and config.get(name) is None:
            return None
        match self.kind:
            case "integer":
                assert self.minimum is not None and self.maximum is not None
                return get_int(config, name, default, int(self.minimum), int(self.maximum))
            case "number":
                assert self.minimum is not None and self.maximum is not None
                return get_float(config, name, default, self.minimum, self.maximum)
            case "boolean":
                return get_bool(config, name, default)
            case "choice":
                return get_choice(config, name, default, self.choices)
            case "string":
                return get_string(config, name, default, self.max_chars)
            case "name":
                return get_name(config, name, default)
        raise JobConfigError(name, f"unsupported field kind {self.kind!r}")

    def describe(self, default: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "default": default}
        if self.help:
            out["help"] = self.help
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices:
            out["choices"] = list(self.choices)
        if self.optional:
            out["optional"] = True
        return out


def _field(default: Any, spec: FieldSpec) -> Any:
    return attrs.field(default=default, metadata={SCHEMA_KEY: spec})


def integer(default: int | None, minimum: int, maximum: int, help: str = "") -> Any:
    """An integer in [minimum, maximum]; with ``default=None`` the field may be left out (or null)."""
    return _field(default, FieldSpec("integer", help, minimum, maximum, optional=default is None))


def number(default: float | None, minimum: float, maximum: float, help: str = "") -> Any:
    """A finite number in [minimum, maximum]; with ``default=None`` the field may be left out (or null)."""
    return _field(default, FieldSpec("number", help, minimum, maximum, optional=default is None))


def boolean(default: bool, help: str = "") -> Any:
    return _field(default, FieldSpec("boolean", help))


def choice(default: str, choices: Collection[str], help: str = "") -> Any:
    return _field(default, FieldSpec("choice", help, choices=tuple(choices)))


def string(default: str | None, help: str = "", max_chars: int = 1000) -> Any:
    return _field(default, FieldSpec("string", help, max_chars=max_chars, optional=default is None))


def name(default: str | None, help: str = "") -> Any:
    """A plain file or column name (no path separators)."""
    return _field(default, FieldSpec("name", help, optional=default is None))


def _specs(schema: type[Any]) -> list[tuple[attrs.Attribute[Any], FieldSpec]]:
    return [(f, f.metadata[SCHEMA_KEY]) for f in attrs.fields(schema) if SCHEMA_KEY in f.metadata]


def parse_config(schema: type[T], config: Mapping[str, Any]) -> T:
    """Validate ``config`` against ``schema``; raises ``JobConfigError`` naming the field."""
    specs = _specs(schema)
    check_config_keys(config, [f.name for f, _ in specs])
    values = {f.name: spec.read(config, f.name, f.default) for f, spec in specs}
    return schema(**values)


def describe_schema(schema: type[Any]) -> dict[str, Any]:
    """``{"fields": {name: {"type", "default", "help", "minimum", "maximum", "choices"}}}``, JSON-able."""
    return {"fields": {f.name: spec.describe(f.default) for f, spec in _specs(schema)}}
