"""What this worker can do: detection at start-up, the compatibility check and the duration estimate."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobRequest

log = logging.getLogger(__name__)

CPU_FALLBACK = {"gpu_memory_mb": 0, "gpu_model": "CPU", "cuda_version": "N/A"}
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


def _detect_nvidia() -> dict[str, Any] | None:
    """GPU 0 through NVML, or None when pynvml is missing or no driver answers."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError subclasses: no driver, no device, library missing
        log.info("no NVIDIA driver answered (%s); using the CPU fallback", error)
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return {
            "gpu_memory_mb": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
            "gpu_model": name.decode() if isinstance(name, bytes) else str(name),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
        }
    except Exception as error:
        log.warning("NVML answered but the GPU query failed (%s); using the CPU fallback", error)
        return None
    finally:
        pynvml.nvmlShutdown()


def detect_capabilities(
    supported_job_types: tuple[str, ...], overrides: Mapping[str, Any] | None = None
) -> WorkerCapabilities:
    """Detect the GPU (NVML, else the CPU fallback), then apply configuration overrides field by field."""
    detected = _detect_nvidia() or CPU_FALLBACK
    fields = {
        **detected,
        "supported_job_types": tuple(supported_job_types),
        "hostname": socket.gethostname(),
        **{key: value for key, value in (overrides or {}).items() if value is not None},
    }
    return WorkerCapabilities(**fields)


def estimate_duration_minutes(
    config: Mapping[str, Any], minutes_per_epoch: float = DEFAULT_MINUTES_PER_EPOCH
) -> float:
    """A rough duration estimate from `config["epochs"]` (one epoch when absent or unusable)."""
    epochs = config.get("epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, int | float) or epochs < 1:
        epochs = 1
    return round(float(epochs) * minutes_per_epoch, 3)
