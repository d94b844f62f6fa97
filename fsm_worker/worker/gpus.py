"""GPU detection at start-up (NVML, else the CPU fallback) and the worker's capabilities from it: IO, so a shell."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

from fsm_worker.protocol.worker.capabilities import WorkerCapabilities

log = logging.getLogger(__name__)

CPU_FALLBACK = {"gpu_memory_mb": 0, "gpu_model": "CPU", "cuda_version": "N/A"}


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
