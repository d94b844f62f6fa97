"""The worker's slots and their pure allocator (issue 12): which free slots a job asking for k GPUs takes.

Shape chosen: (b) one job machine per job on the worker's table (plus `queued`), and this pure allocator for the
slots (HTCondor partitionable slots). The allocator holds no job state beyond "which slot holds which job", so
the table stays the one place that reads like the spec; placement is all-or-nothing (k slots together or none),
deterministic (lowest free slot indices first), and the advertised status is derived from the slots alone.
"""

from __future__ import annotations

import enum

import attrs


class SlotState(enum.Enum):
    """What a slot advertises in `metadata.slots`."""

    AVAILABLE = "available"
    RESERVED = "reserved"
    BUSY = "busy"


@attrs.frozen
class Slot:
    """One slot: its index, the GPU indices it offers (empty on a CPU slot), the smallest GPU memory (MiB) and
    the GPU model ("" when unknown)."""

    index: int
    gpus: tuple[int, ...] = ()
    memory_mb: int = 0
    model: str = ""


@attrs.frozen
class Holding:
    """A job's hold on slots: reserved (accepted, not yet running) or busy (assigned and placed)."""

    job_id: str
    state: SlotState


@attrs.frozen
class SlotTable:
    """The slots and who holds each: an immutable value; every change returns a new table."""

    slots: tuple[Slot, ...]
    holders: tuple[Holding | None, ...] = attrs.field()

    @holders.default
    def _all_free(self) -> tuple[Holding | None, ...]:
        return (None,) * len(self.slots)

    @classmethod
    def of(cls, slots: tuple[Slot, ...]) -> SlotTable:
        """A table of free slots; at least one slot."""
        if not slots:
            raise ValueError("slots: a worker needs at least one slot")
        return cls(slots)

    @property
    def total(self) -> int:
        return len(self.slots)

    @property
    def free(self) -> int:
        return sum(holder is None for holder in self.holders)

    def could_ever_fit(self, gpus: int, min_memory_mb: int = 0) -> bool:
        """Whether `gpus` slots with at least `min_memory_mb` each exist at all (else: `incompatible`)."""
        return gpus <= sum(slot.memory_mb >= min_memory_mb or not slot.gpus for slot in self.slots)

    def fits_now(self, gpus: int, min_memory_mb: int = 0) -> bool:
        """Whether `gpus` slots (with `min_memory_mb` each) are free now."""
        free = sum(
            holder is None and (slot.memory_mb >= min_memory_mb or not slot.gpus)
            for slot, holder in zip(self.slots, self.holders, strict=True)
        )
        return gpus >= 1 and free >= gpus

    def place(self, job_id: str, gpus: int, state: SlotState, min_memory_mb: int = 0) -> SlotTable | None:
        """`gpus` free slots (lowest indices first) held by `job_id`, or None when they are not all free now."""
        if state is SlotState.AVAILABLE or gpus < 1 or self.slots_of(job_id):
            return None
        fitting = [
            i
            for i, (slot, holder) in enumerate(zip(self.slots, self.holders, strict=True))
            if holder is None and (slot.memory_mb >= min_memory_mb or not slot.gpus)
        ]
        if len(fitting) < gpus:
            return None
        chosen = set(fitting[:gpus])
        holding = Holding(job_id, state)
        return attrs.evolve(
            self, holders=tuple(holding if i in chosen else h for i, h in enumerate(self.holders))
        )

    def mark(self, job_id: str, state: SlotState) -> SlotTable:
        """The job's slots move to `state` (reserved → busy); AVAILABLE releases them."""
        holding = None if state is SlotState.AVAILABLE else Holding(job_id, state)
        return attrs.evolve(
            self,
            holders=tuple(holding if h is not None and h.job_id == job_id else h for h in self.holders),
        )

    def release(self, job_id: str) -> SlotTable:
        """The job's slots are free again (no-op for a job holding none)."""
        return self.mark(job_id, SlotState.AVAILABLE)

    def slots_of(self, job_id: str) -> tuple[Slot, ...]:
        """The slots `job_id` holds, in index order."""
        return tuple(
            s for s, h in zip(self.slots, self.holders, strict=True) if h is not None and h.job_id == job_id
        )

    def cuda_visible_devices(self, job_id: str) -> str:
        """The job process's `CUDA_VISIBLE_DEVICES`: its slots' GPU indices joined by ","; "" on CPU slots."""
        return ",".join(str(gpu) for slot in self.slots_of(job_id) for gpu in slot.gpus)

    def state_of(self, index: int) -> SlotState:
        holder = self.holders[index]
        return SlotState.AVAILABLE if holder is None else holder.state

    def status(self) -> str:
        """The advertised status: available while a slot is free, else busy if any slot runs a job, else reserved."""
        if self.free:
            return "available"
        return (
            "busy" if any(h is not None and h.state is SlotState.BUSY for h in self.holders) else "reserved"
        )

    def metadata(self) -> list[dict[str, object]]:
        """`metadata.slots`: one entry per slot, in index order."""
        return [
            {"slot": slot.index, "gpus": list(slot.gpus), "state": self.state_of(i).value}
            for i, slot in enumerate(self.slots)
        ]
