"""What this worker can do: the compatibility check and the duration estimate (detection: `worker/gpus.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobRequest

DEFAULT_MINUTES_PER_EPOCH = 0.05


@attrs.frozen
class WorkerCapabilities:
    """The worker's hardware and the job types it is configured to run."""

    gpu_memory_mb: int
    gpu_model: str
    cuda_version: str
    supported_job_types: tuple[str, ...]
    hostname: str
    max_concurrent_jobs: int = 1

    def as_properties(self) -> dict[str, Any]:
        """The capabilities as discovery metadata properties."""
        return {**attrs.asdict(self), "supported_job_types": list(self.supported_job_types)}

    def incompatibilities(self, request: JobRequest) -> list[str]:
        """Every reason this worker cannot run `request` (empty: compatible)."""
        reasons = []
        if request.job_type not in self.supported_job_types:
            supported = ", ".join(self.supported_job_types) or "none"
            reasons.append(f"unsupported job type {request.job_type!r} (supported: {supported})")
        needed = request.requirements.min_gpu_memory_mb
        if needed > self.gpu_memory_mb:
            reasons.append(f"needs {needed} MB of GPU memory, this worker has {self.gpu_memory_mb} MB")
        return reasons


def estimate_duration_minutes(
    config: Mapping[str, Any], minutes_per_epoch: float = DEFAULT_MINUTES_PER_EPOCH
) -> float:
    """A rough duration estimate from `config["epochs"]` (one epoch when absent or unusable)."""
    epochs = config.get("epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, int | float) or epochs < 1:
        epochs = 1
    return round(float(epochs) * minutes_per_epoch, 3)
