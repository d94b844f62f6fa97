"""GPU detection at start-up (NVML, else the CPU fallback) and the worker's capabilities and slots from it:
IO, so a shell. One slot per GPU (issue 12): every GPU NVML finds, or the configured indices (`--gpus 0,2,3`,
which need no driver: fake GPUs for tests); a host without GPUs offers `--slots N` CPU slots."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from fsm_worker.protocol.worker.capabilities import WorkerCapabilities
from fsm_worker.protocol.worker.slots import Slot

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
        memory = {
            index: int(
                pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total // 2**20
            )
            for index in range(pynvml.nvmlDeviceGetCount())
        }
        return {
            "gpu_memory_mb": max(memory.values(), default=0),
            "gpu_model": name.decode() if isinstance(name, bytes) else str(name),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "devices": memory,
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
    detected = {k: v for k, v in (_detect_nvidia() or CPU_FALLBACK).items() if k != "devices"}
    fields = {
        **detected,
        "supported_job_types": tuple(supported_job_types),
        "hostname": socket.gethostname(),
        **{key: value for key, value in (overrides or {}).items() if value is not None},
    }
    return WorkerCapabilities(**fields)


def detect_slots(gpus: Sequence[str], cpu_slots: int = 1, memory_mb: int | None = None) -> tuple[Slot, ...]:
    """The worker's slots: one per GPU of `gpus` ("auto": every GPU NVML finds), else `cpu_slots` CPU slots.

    `memory_mb` (the `gpu_memory_mb` setting) overrides each GPU slot's detected memory; a configured GPU that
    NVML does not know (a fake GPU) has 0 unless overridden."""
    detected = _detect_nvidia()
    devices: dict[int, int] = detected["devices"] if detected else {}
    if list(gpus) in ([], ["auto"]):
        indices = sorted(devices)
        if not indices:
            return tuple(Slot(n) for n in range(max(cpu_slots, 1)))
    else:
        indices = [parse_gpu_index(gpu) for gpu in gpus]
    return tuple(
        Slot(n, (index,), memory_mb if memory_mb is not None else devices.get(index, 0))
        for n, index in enumerate(indices)
    )


def parse_gpu_index(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"gpus: {text!r} is not a GPU index (or auto)")
    return int(text)


def with_slots(capabilities: WorkerCapabilities, slots: tuple[Slot, ...]) -> WorkerCapabilities:
    """The capabilities a worker with `slots` advertises: as many concurrent jobs as slots."""
    return attrs.evolve(capabilities, max_concurrent_jobs=len(slots))
