"""Worker-side job types: a registry maps ``job_type`` to a handler that builds what to run.

The worker never runs a command a client sent: a handler derives the argv (or a Python callable)
from its own configuration plus the validated config values and the uploaded input files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from fsm_worker.jobs.config import check_config_keys
from fsm_worker.jobs.spec import JobSpec, UnknownJobType


def _argv(value: Any) -> tuple[str, ...]:
    argv = tuple(str(part) for part in value)
    if not argv:
        raise ValueError("argv must not be empty")
    return argv


@attrs.frozen
class Command:
    """A process to run: ``argv`` with ``env`` added to the worker's environment (or replacing it)."""

    argv: tuple[str, ...] = attrs.field(converter=_argv)
    env: Mapping[str, str] = attrs.field(factory=dict)
    inherit_env: bool = True


def _callable_target(value: str | Callable[..., Any]) -> str:
    if isinstance(value, str):
        target = value
    else:
        module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
        if not module or module == "__main__" or "<" in qualname:
            raise ValueError(f"{value!r} is not importable by module path")
        target = f"{module}:{qualname}"
    if target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    return target


@attrs.frozen
class PythonCall:
    """An importable callable run as ``python -u -m fsm_worker.jobs.pycall`` with JSON keyword args.

    The callable reports through ``fsm_worker.jobs.report``; returning normally means success.
    """

    target: str = attrs.field(converter=_callable_target)
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)


Launch = Command | PythonCall


def resolve_target(target: str) -> Callable[..., Any]:
    """Import ``package.module:qualname`` and return the object it names."""
    module_name, qualname = target.split(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


@runtime_checkable
class JobHandler(Protocol):
    """One job type. ``validate_config`` and ``build`` raise ``JobConfigError`` / ``JobInputError``."""

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check the client's config without touching files (usable at request time)."""

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        """Rough run time; should not raise, even for a config that fails validation."""

    def build(self, spec: JobSpec) -> Launch:
        """Check the inputs in ``spec.inputs_dir`` and return what to run (cwd is ``spec.workdir``)."""


@attrs.frozen
class StaticCommandHandler:
    """A job type whose command is fixed by the worker's configuration; it accepts no config fields."""

    argv: tuple[str, ...] = attrs.field(converter=_argv)
    env: Mapping[str, str] = attrs.field(factory=dict)
    minutes: float = 1.0

    def validate_config(self, config: Mapping[str, Any]) -> None:
        check_config_keys(config, ())

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return self.minutes

    def build(self, spec: JobSpec) -> Launch:
        return Command(self.argv, self.env)


@attrs.define
class JobTypeRegistry:
    """``job_type`` name → handler, configured on the worker."""

    _handlers: dict[str, JobHandler] = attrs.field(factory=dict, init=False)

    def register(self, job_type: str, handler: JobHandler, *, replace: bool = False) -> None:
        if not job_type:
            raise ValueError("job_type must not be empty")
        if job_type in self._handlers and not replace:
            raise ValueError(f"job type {job_type!r} is already registered")
        self._handlers[job_type] = handler

    def get(self, job_type: str) -> JobHandler:
        try:
            return self._handlers[job_type]
        except KeyError:
            raise UnknownJobType(job_type) from None

    def validate(self, job_type: str, config: Mapping[str, Any]) -> float:
        """Validate a request's type and config; return the estimated minutes."""
        handler = self.get(job_type)
        handler.validate_config(config)
        return handler.estimate_minutes(config)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def default_registry() -> JobTypeRegistry:
    """A registry holding the built-in job types (currently ``train-demo``)."""
    from fsm_worker.jobs.train_demo import TRAIN_DEMO, TrainDemoHandler

    registry = JobTypeRegistry()
    registry.register(TRAIN_DEMO, TrainDemoHandler())
    return registry
