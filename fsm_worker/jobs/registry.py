"""Worker-side job types: a registry maps ``job_type`` to a handler that builds what to run.

The worker never runs a command a client sent: a handler derives the argv (or a Python callable)
from its own configuration plus the validated config values and the uploaded input files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from fsm_worker.jobs.config import check_config_keys
from fsm_worker.jobs.launch import (
    Command,
    Launch,
    PythonCall,
    SideChannel,
    argv_tuple,
    resolve_object,
    resolve_target,
)
from fsm_worker.jobs.spec import JobSpec, UnknownJobType
from fsm_worker.protocol.messages import InputFile

log = logging.getLogger(__name__)

__all__ = [
    "Command",
    "JobHandler",
    "JobTypeRegistry",
    "Launch",
    "PythonCall",
    "SideChannel",
    "StaticCommandHandler",
    "default_registry",
    "resolve_object",
    "resolve_target",
]


@runtime_checkable
class JobHandler(Protocol):
    """One job type. ``validate_config`` and ``build`` raise ``JobConfigError`` / ``JobInputError``.

    Optional methods the registry uses when present: ``validate_inputs(manifest, config)`` (the request's
    input manifest, checked before any byte moves) and ``describe()`` (a JSON-able schema for discovery).
    """

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check the client's config without touching files (usable at request time)."""

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        """Rough run time; should not raise, even for a config that fails validation."""

    def build(self, spec: JobSpec) -> Launch:
        """Check the inputs in ``spec.inputs_dir`` and return what to run (cwd is ``spec.workdir``)."""


@attrs.frozen
class StaticCommandHandler:
    """A job type whose command is fixed by the worker's configuration; it accepts no config fields."""

    argv: tuple[str, ...] = attrs.field(converter=argv_tuple)
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

    def validate(
        self, job_type: str, config: Mapping[str, Any], inputs: Sequence[InputFile] | None = None
    ) -> float:
        """Validate a request's type, config and (when the client sent one) input manifest.

        Returns the estimated minutes; raises ``JobInputInvalid`` (naming the field or file) otherwise.
        """
        handler = self.get(job_type)
        handler.validate_config(config)
        check_inputs = getattr(handler, "validate_inputs", None)
        if inputs is not None and callable(check_inputs):
            check_inputs(tuple(inputs), config)
        return handler.estimate_minutes(config)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per job type a small JSON-able description (its config fields, accepted inputs), for discovery."""
        out: dict[str, dict[str, Any]] = {}
        for job_type, handler in sorted(self._handlers.items()):
            describe = getattr(handler, "describe", None)
            try:
                out[job_type] = dict(describe()) if callable(describe) else {}
            except Exception:
                log.exception("job type %r: describe() failed", job_type)
                out[job_type] = {}
        return out

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def default_registry(*, plugins: bool = True) -> JobTypeRegistry:
    """The built-in job types (``train-demo``; ``sleap-train``/``sleap-track`` where sleap-nn is installed)
    plus every job type installed under the ``fsm_worker.job_types`` entry-point group."""
    from fsm_worker.jobs.plugins import add_builtin_job_types, add_entry_point_job_types

    registry = JobTypeRegistry()
    add_builtin_job_types(registry)
    if plugins:
        add_entry_point_job_types(registry)
    return registry
