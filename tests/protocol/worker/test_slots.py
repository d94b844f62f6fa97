"""The pure slot allocator: all-or-nothing placement, derived status, CUDA_VISIBLE_DEVICES, metadata."""

from __future__ import annotations

import pytest

from fsm_worker.protocol.worker.slots import Slot, SlotState, SlotTable

GPUS4 = SlotTable.of(tuple(Slot(i, (i,), 8000) for i in range(4)))


def test_a_job_asking_for_k_gpus_gets_the_k_lowest_free_slots_together() -> None:
    table = GPUS4.place("a", 1, SlotState.BUSY)
    assert table is not None
    table = table.place("b", 2, SlotState.RESERVED)
    assert table is not None
    assert [s.index for s in table.slots_of("b")] == [1, 2]
    assert table.cuda_visible_devices("b") == "1,2"
    assert table.free == 1


def test_k_slots_or_none() -> None:
    table = GPUS4.place("a", 3, SlotState.BUSY)
    assert table is not None
    assert table.place("b", 2, SlotState.RESERVED) is None
    assert table.free == 1  # unchanged value: the refusal changed nothing


def test_release_frees_exactly_the_jobs_slots() -> None:
    table = GPUS4.place("a", 2, SlotState.BUSY)
    assert table is not None
    table = table.place("b", 2, SlotState.BUSY)
    assert table is not None
    table = table.release("a")
    assert [table.state_of(i).value for i in range(4)] == ["available", "available", "busy", "busy"]
    assert table.slots_of("a") == ()


def test_status_is_derived_available_busy_reserved() -> None:
    reserved = GPUS4.place("a", 4, SlotState.RESERVED)
    assert reserved is not None
    assert GPUS4.status() == "available"
    assert reserved.status() == "reserved"
    assert reserved.mark("a", SlotState.BUSY).status() == "busy"


def test_metadata_lists_every_slot() -> None:
    table = GPUS4.place("a", 1, SlotState.RESERVED)
    assert table is not None
    assert table.metadata()[:2] == [
        {"slot": 0, "gpus": [0], "state": "reserved"},
        {"slot": 1, "gpus": [1], "state": "available"},
    ]


def test_cpu_slots_have_no_cuda_devices_and_ignore_gpu_memory() -> None:
    table = SlotTable.of((Slot(0), Slot(1))).place("a", 2, SlotState.BUSY, min_memory_mb=4096)
    assert table is not None
    assert table.cuda_visible_devices("a") == ""


def test_incompatible_when_no_combination_could_ever_fit() -> None:
    assert not GPUS4.could_ever_fit(5)
    assert not GPUS4.could_ever_fit(1, min_memory_mb=9000)
    assert GPUS4.could_ever_fit(4, min_memory_mb=8000)


def test_a_job_cannot_be_placed_twice_and_no_slots_is_refused() -> None:
    table = GPUS4.place("a", 1, SlotState.BUSY)
    assert table is not None
    assert table.place("a", 1, SlotState.BUSY) is None
    with pytest.raises(ValueError, match="slots"):
        SlotTable.of(())
