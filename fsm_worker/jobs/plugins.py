"""Where job types come from: the built-in ones, the ``fsm_worker.job_types`` entry points, ``MODULE:OBJECT``.

An entry point's name is the job type and its object a handler, or a zero-argument factory returning one::

    [project.entry-points."fsm_worker.job_types"]
    grep-count = "my_lab.jobs:GrepCount"

``add_job_types_from(registry, "pkg.mod:OBJECT")`` (for ``fsm-worker worker --job-types-from``) takes a
``JobTypeRegistry``, a mapping ``name → handler``, or a callable returning either; names already
registered are kept unless ``replace``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from fsm_worker.jobs.launch import resolve_object

if TYPE_CHECKING:
    from fsm_worker.jobs.registry import JobHandler, JobTypeRegistry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fsm_worker.job_types"


def add_builtin_job_types(registry: JobTypeRegistry) -> None:
    """``train-demo`` always; ``sleap-train`` and ``sleap-track`` where sleap-nn is installed."""
    from fsm_worker.jobs.sleap import sleap_available
    from fsm_worker.jobs.train_demo import TRAIN_DEMO, TrainDemoHandler

    registry.register(TRAIN_DEMO, TrainDemoHandler())
    if sleap_available():
        from fsm_worker.jobs.sleap import SLEAP_TRACK, SLEAP_TRAIN, SleapTrackHandler, SleapTrainHandler

        registry.register(SLEAP_TRAIN, SleapTrainHandler())
        registry.register(SLEAP_TRACK, SleapTrackHandler())


def _is_handler(obj: object) -> bool:
    """A handler instance (a class has the methods too, but is a factory)."""
    return not isinstance(obj, type) and all(
        callable(getattr(obj, name, None)) for name in ("validate_config", "estimate_minutes", "build")
    )


def _handler(obj: Any, source: str) -> JobHandler:
    if not _is_handler(obj) and callable(obj):
        obj = obj()
    if not _is_handler(obj):
        raise TypeError(f"{source} is not a job type (needs validate_config, estimate_minutes and build)")
    return obj  # type: ignore[no-any-return]


def add_entry_point_job_types(registry: JobTypeRegistry, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register every installed plugin job type; a broken or clashing plugin is logged and skipped."""
    added = []
    for entry in metadata.entry_points(group=group):
        source = f"entry point {entry.name!r} ({entry.value})"
        if entry.name in registry:
            log.warning("%s skipped: job type %r is already registered", source, entry.name)
            continue
        try:
            registry.register(entry.name, _handler(entry.load(), source))
        except Exception as error:
            log.warning("%s skipped: %s: %s", source, type(error).__name__, error)
            continue
        added.append(entry.name)
    return added


def add_job_types_from(registry: JobTypeRegistry, target: str, *, replace: bool = False) -> list[str]:
    """Register the job types that ``package.module:OBJECT`` names; errors raise (the owner asked for them)."""
    from fsm_worker.jobs.registry import JobTypeRegistry

    obj = resolve_object(target)
    if callable(obj) and not isinstance(obj, JobTypeRegistry) and not _is_handler(obj):
        obj = obj()
    if isinstance(obj, JobTypeRegistry):
        found: Mapping[str, Any] = {name: obj.get(name) for name in obj.names()}
    elif isinstance(obj, Mapping):
        found = obj
    else:
        raise TypeError(f"{target} must be a JobTypeRegistry or a mapping of job type names to handlers")
    added = []
    for job_type, handler in found.items():
        if job_type in registry and not replace:
            log.info("%s: job type %r already registered; kept", target, job_type)
            continue
        registry.register(str(job_type), _handler(handler, f"{target}[{job_type!r}]"), replace=replace)
        added.append(str(job_type))
    return sorted(added)
