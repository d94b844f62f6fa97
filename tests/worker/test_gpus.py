"""GPU detection (NVML, else the CPU fallback) and configuration overrides."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from fsm_worker.protocol.worker.capabilities import WorkerCapabilities
from fsm_worker.protocol.worker.instructions import SlotsView
from fsm_worker.protocol.worker.slots import Slot
from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.server.filters import Filters
from fsm_worker.worker.config import WorkerConfig
from fsm_worker.worker.gpus import detect_capabilities, detect_slots, with_slots
from fsm_worker.worker.summary import slots_metadata


def test_cpu_fallback_when_no_gpu_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: as on a machine without nvidia-ml-py
    caps = detect_capabilities(("train-demo",))
    assert (caps.gpu_memory_mb, caps.gpu_model, caps.cuda_version) == (0, "CPU", "N/A")
    assert caps.max_concurrent_jobs == 1 and caps.hostname


def test_detection_without_a_driver_falls_back() -> None:
    caps = detect_capabilities(("train-demo",))  # this machine has nvidia-ml-py but no NVIDIA driver
    assert caps.gpu_model == "CPU" or caps.gpu_memory_mb > 0


def test_every_field_can_be_overridden() -> None:
    caps = detect_capabilities(
        ("a",), {"gpu_memory_mb": 8192, "gpu_model": "Fake T4", "cuda_version": "12.4", "hostname": "gpu-7"}
    )
    assert caps == WorkerCapabilities(8192, "Fake T4", "12.4", ("a",), "gpu-7")
    assert caps.as_properties()["supported_job_types"] == ["a"]


class _FakeNvml:
    """Stands in for pynvml with one 16 GB GPU: unit-tests the NVML branch on a machine without a driver."""

    class _Memory:
        total = 16 * 1024**3

    def __init__(self, fail_query: bool = False) -> None:
        self.fail_query = fail_query
        self.shut_down = False

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        if self.fail_query:
            raise RuntimeError("query failed")
        return object()

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return b"Tesla T4"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory:
        return self._Memory()

    def nvmlShutdown(self) -> None:
        self.shut_down = True


def test_nvidia_gpu_detected_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    caps = detect_capabilities(("train-demo",), {"gpu_model": None})
    assert (caps.gpu_memory_mb, caps.gpu_model, caps.cuda_version) == (16384, "Tesla T4", "12.4")
    assert fake.shut_down


def test_failed_gpu_query_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(fail_query=True))
    assert detect_capabilities(("train-demo",)).gpu_model == "CPU"


def test_configured_gpus_are_one_slot_each_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    slots = detect_slots(("0", "2", "3"))
    assert [(s.index, s.gpus, s.memory_mb) for s in slots] == [(0, (0,), 0), (1, (2,), 0), (2, (3,), 0)]
    assert [s.gpus for s in detect_slots(("1",), memory_mb=4096)] == [(1,)]
    assert detect_slots(("1",), memory_mb=4096)[0].memory_mb == 4096


def test_auto_without_gpus_gives_cpu_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert [(s.index, s.gpus) for s in detect_slots(("auto",), cpu_slots=3)] == [(0, ()), (1, ()), (2, ())]


def test_auto_with_nvml_gives_a_slot_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    assert [(s.gpus, s.memory_mb) for s in detect_slots(("auto",), cpu_slots=3)] == [((0,), 16384)]


def test_a_gpu_index_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="gpus"):
        detect_slots(("zero",))


def test_configured_gpus_may_give_each_gpu_memory_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    slots = detect_slots(("0:24576:RTX-4090", "2:8192:Tesla T4", "3", "5:"))
    assert [(s.gpus, s.memory_mb, s.model) for s in slots] == [
        ((0,), 24576, "RTX-4090"), ((2,), 8192, "Tesla T4"), ((3,), 0, ""), ((5,), 0, "")
    ]  # fmt: skip
    assert detect_slots(("1:2048",), memory_mb=4096)[0].memory_mb == 2048  # the entry wins over the setting
    caps = with_slots(detect_capabilities(("a",)), slots)
    assert (caps.gpu_model, caps.gpu_memory_mb, caps.max_concurrent_jobs) == ("RTX-4090", 24576, 4)
    assert with_slots(detect_capabilities(("a",), {"gpu_model": "mine"}), slots, True).gpu_model == "mine"
    for bad in ("x:1", "0:big", "0:1:2:3"):
        with pytest.raises(ValueError, match="INDEX"):
            detect_slots((bad,))


def test_nvml_gives_each_slot_its_gpu_model_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    assert [(s.memory_mb, s.model) for s in detect_slots(("auto",))] == [(16384, "Tesla T4")]
    assert [(s.memory_mb, s.model) for s in detect_slots(("0::T4-renamed",))] == [(16384, "T4-renamed")]


def test_the_gpus_setting_accepts_memory_and_model_and_names_itself_when_wrong() -> None:
    assert WorkerConfig("ws://x", "t", gpus=("0:24576:RTX-4090", "1")).gpus == ("0:24576:RTX-4090", "1")
    with pytest.raises(ValueError, match="gpus"):
        WorkerConfig("ws://x", "t", gpus=("0:lots",))


def test_discovery_filters_on_free_slots_and_per_gpu_memory_as_published() -> None:
    """The worker's published metadata, matched by the server's discovery filters (a 24 GB and an 8 GB GPU)."""
    slots = (Slot(0, (0,), 24576, "RTX-4090"), Slot(1, (1,), 8192, "T4"))

    def published(states: tuple[str, str]) -> dict[str, Any]:
        view = SlotsView(tuple((s.index, s.gpus, s.memory_mb, st) for s, st in zip(slots, states, strict=True)),
                         0, 4, 0)  # fmt: skip
        status = WorkerStatus.AVAILABLE if "available" in states else WorkerStatus.BUSY
        return slots_metadata(status, view, 0, slots)

    idle = published(("available", "available"))
    assert [s["model"] for s in idle["slots"]] == ["RTX-4090", "T4"]
    assert idle["properties"]["free_slots"] == 2 and idle["properties"]["gpu_memory_mb"] == 24576
    big_now = Filters(properties={"free_slots": {"$gte": 1}, "gpu_memory_mb": {"$gte": 16000}})
    two_now = Filters(properties={"free_slots": {"$gte": 2}})
    assert big_now.matches("worker", idle) and two_now.matches("worker", idle)
    small_free = published(("busy", "available"))  # only the 8 GB GPU is free
    assert small_free["properties"]["gpu_memory_mb"] == 8192
    assert not big_now.matches("worker", small_free) and not two_now.matches("worker", small_free)
    held = published(("busy", "held"))  # the free GPU is held for a queued job: not free
    assert held["properties"]["free_slots"] == 0 and not big_now.matches("worker", held)
    assert Filters(properties={"free_slots": {"$gte": 1}}).matches("worker", small_free)
