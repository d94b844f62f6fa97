"""What a job type's ``build`` returns: a ``Command`` (any program) or a ``PythonCall`` (an importable function).

A launch also says how its output is read (``progress``: a parser from ``fsm_worker.jobs.parsers``), which extra
worker environment variables it needs (``env_passthrough``) and how it stops early (``soft_stop``).
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from fsm_worker.jobs.parsers import OutputParser, ParsedLine


def names_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(name) for name in value)


def argv_tuple(value: Any) -> tuple[str, ...]:
    argv = tuple(str(part) for part in value)
    if not argv:
        raise ValueError("argv must not be empty")
    return argv


@runtime_checkable
class SideChannel(Protocol):
    """A channel a run opens before its process starts (e.g. sleap-nn's ZMQ sockets); driven by the runner.

    ``open`` runs before the launch, ``events`` yields progress-channel items while the run lives,
    ``stop_early`` asks the job to stop and keep its outputs (False: it cannot, use the default signal),
    ``close`` runs after the run ended, whatever happened.
    """

    async def open(self) -> None: ...

    def events(self) -> AsyncIterator[ParsedLine]: ...

    async def stop_early(self) -> bool: ...

    async def close(self) -> None: ...


@runtime_checkable
class ReopenableChannel(Protocol):
    """A side channel a new worker process can open again for a job that outlived the old one (adoption).

    ``saved`` is what the job was told at its start (JSON-able; the runner keeps it in the run's record
    directory); ``reopened(saved)`` is the same channel set up as recorded, on a channel built anew by the
    job type. sleap-nn's ZMQ channel saves its two ports: the running job keeps connecting to them.
    """

    def saved(self) -> dict[str, Any]: ...

    def reopened(self, saved: Mapping[str, Any]) -> SideChannel: ...


@attrs.frozen
class Command:
    """A process to run: ``argv`` in a start-up environment built from the worker's allow-list plus ``env``.

    ``progress`` parses stdout (default: this project's JSON lines); ``env_passthrough`` names more worker
    variables (or ``PREFIX*`` patterns) the job needs; ``soft_stop_signal`` is what a graceful stop sends the
    group unless ``side_channel`` handles it; ``inherit_env=False`` starts from an empty environment.
    """

    argv: tuple[str, ...] = attrs.field(converter=argv_tuple)
    env: Mapping[str, str] = attrs.field(factory=dict)
    inherit_env: bool = True
    progress: OutputParser | None = None
    env_passthrough: tuple[str, ...] = attrs.field(default=(), converter=names_tuple)
    soft_stop_signal: int = signal.SIGINT
    side_channel: SideChannel | None = None


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
    env_passthrough: tuple[str, ...] = attrs.field(default=(), converter=names_tuple)


Launch = Command | PythonCall


def resolve_target(target: str) -> Callable[..., Any]:
    """Import ``package.module:qualname`` and return the object it names."""
    obj = resolve_object(target)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def resolve_object(target: str) -> Any:
    """Import ``package.module:qualname`` and return the object it names (``ValueError`` if malformed)."""
    if target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"expected 'package.module:object', got {target!r}")
    module_name, qualname = target.split(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
