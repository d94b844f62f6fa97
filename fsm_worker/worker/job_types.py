"""The job types this worker is configured to run, as the core asks about them (estimate, config check)."""

from __future__ import annotations

from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import JobInputInvalid
from fsm_worker.protocol.messages import JobRequest


class ConfiguredJobTypes:
    """`names` of `registry` (default: all of them); refuses names the registry does not have."""

    def __init__(self, registry: JobTypeRegistry, names: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self.names = names or tuple(registry.names())
        unknown = sorted(set(self.names) - set(registry.names()))
        if unknown:
            known = ", ".join(registry.names())
            raise ValueError(
                f"job types {', '.join(unknown)} are not configured on this worker (known: {known})"
            )

    def estimate(self, request: JobRequest) -> float:
        """The job's duration in minutes, as its type estimates it."""
        return round(self.registry.get(request.job_type).estimate_minutes(request.config), 3)

    def check_config(self, request: JobRequest) -> list[str]:
        """What is wrong with the job's config (empty: nothing)."""
        try:
            self.registry.validate(request.job_type, request.config, request.inputs)
        except JobInputInvalid as error:
            return [str(error)]
        return []
