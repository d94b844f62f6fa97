"""GPU detection at start-up (NVML, else the CPU fallback) and the worker's capabilities and slots from it:
IO, so a shell. One slot per GPU (issue 12): every GPU NVML finds, or the configured indices (`--gpus 0,2,3`,
which need no driver: fake GPUs for tests); a host without GPUs offers `--slots N` CPU slots.

Each GPU slot carries its GPU's memory and model: from NVML when it knows the GPU, else (or overriding it) from
the configured entry `INDEX[:MEMORY_MB[:MODEL]]` (`--gpus 0:24576:RTX-4090,1:8192:T4`)."""

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


@attrs.frozen
class GpuInfo:
    """What is known of one GPU: its memory (MiB) and model name ("" when unknown)."""

    memory_mb: int = 0
    model: str = ""


def _text(name: object) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


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
        devices: dict[int, GpuInfo] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            device = pynvml.nvmlDeviceGetHandleByIndex(index)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(device).total // 2**20)
            devices[index] = GpuInfo(total, _text(pynvml.nvmlDeviceGetName(device)))
        return {
            "gpu_memory_mb": max((d.memory_mb for d in devices.values()), default=0),
            "gpu_model": _text(name),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "devices": devices,
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

    A GPU's memory and model come from its `gpus` entry (`INDEX[:MEMORY_MB[:MODEL]]`), else from NVML, else
    `memory_mb` (the `gpu_memory_mb` setting, which also overrides what NVML found) and "" (a fake GPU)."""
    detected = _detect_nvidia()
    devices: dict[int, GpuInfo] = detected["devices"] if detected else {}
    if list(gpus) in ([], ["auto"]):
        entries = [(index, GpuInfo()) for index in sorted(devices)]
        if not entries:
            return tuple(Slot(n) for n in range(max(cpu_slots, 1)))
    else:
        entries = [parse_gpu(gpu) for gpu in gpus]
    slots = []
    for n, (index, given) in enumerate(entries):
        found = devices.get(index, GpuInfo())
        memory = given.memory_mb or (memory_mb if memory_mb is not None else found.memory_mb)
        slots.append(Slot(n, (index,), memory, given.model or found.model))
    return tuple(slots)


def parse_gpu(text: str) -> tuple[int, GpuInfo]:
    """One `gpus` entry: `INDEX`, `INDEX:MEMORY_MB` or `INDEX:MEMORY_MB:MODEL` (MEMORY_MB may be empty)."""
    index, _, rest = text.strip().partition(":")
    memory, _, model = rest.partition(":")
    if not index.isdigit() or not (memory == "" or memory.isdigit()) or ":" in model:
        raise ValueError(f"gpus: {text!r} is not INDEX[:MEMORY_MB[:MODEL]] (or auto)")
    return int(index), GpuInfo(int(memory or 0), model.strip())


def with_slots(
    capabilities: WorkerCapabilities, slots: tuple[Slot, ...], model_given: bool = False
) -> WorkerCapabilities:
    """The capabilities a worker with `slots` advertises: as many concurrent jobs as slots; `gpu_memory_mb` is
    its largest GPU slot's (a job needing more is `incompatible`) when the slots know their memory; `gpu_model`
    the first GPU slot's model when the slots know one and `gpu_model` was not set (`model_given`)."""
    models = [slot.model for slot in slots if slot.gpus and slot.model]
    if models and not model_given:
        capabilities = attrs.evolve(capabilities, gpu_model=models[0])
    memory = max((slot.memory_mb for slot in slots if slot.gpus), default=0)
    if memory:
        capabilities = attrs.evolve(capabilities, gpu_memory_mb=memory)
    return attrs.evolve(capabilities, max_concurrent_jobs=len(slots))
