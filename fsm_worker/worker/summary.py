"""The job summary a worker publishes in its discovery metadata, for dashboards (docs/metrics.md).

Pure: it reads what the core already decided (its events and instructions) and returns metadata updates.
The server never reads peer messages; it learns a job's progress only from what the worker publishes here:

- ``metadata.job``: the running job — ``run, job_type, status, progress, message, elapsed_seconds`` and
  ``metrics`` (the job's own numbers: loss, epoch, ...), or ``null`` when idle;
- ``metadata.last_job``: the job that ended last — ``run, job_type, outcome, duration_seconds``.

``run`` is the worker's own count of the jobs it started (1, 2, ...), not the job id: public metadata names no
job (issue 10), yet the dashboard can tell one run's progress series from the next.

Updates of a running job are published at most every ``interval`` seconds; starts and ends at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobCancelled, JobComplete, JobFailed, JobStatus, ReservationExpired
from fsm_worker.protocol.worker.instructions import Instruction, Send, SlotsView, StartRun
from fsm_worker.protocol.worker.slots import Slot
from fsm_worker.protocol.worker.states import WorkerStatus


def outcome_of(message: object) -> str | None:
    """The outcome a terminal job message stands for (``None`` for any other message)."""
    match message:
        case JobComplete(stopped_early=True):
            return "stopped"
        case JobComplete():
            return "completed"
        case JobFailed():
            return "failed"
        case JobCancelled():
            return "cancelled"
        case ReservationExpired():
            return "expired"
    return None


@attrs.define
class _Running:
    run: int
    job_type: str
    started_at: float
    fields: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class JobSummary:
    """Turns the core's instructions into ``metadata.job`` / ``metadata.last_job`` updates."""

    interval: float = 0.5
    _running: dict[str, _Running] = attrs.field(factory=dict, init=False)
    _published_at: float = attrs.field(default=float("-inf"), init=False)
    _dirty: bool = attrs.field(default=False, init=False)
    _last: dict[str, Any] | None = attrs.field(default=None, init=False)
    _runs: int = attrs.field(default=0, init=False)

    def observe(self, instructions: Sequence[Instruction], now: float) -> list[dict[str, Any]]:
        """Metadata updates to publish after the core returned ``instructions`` at ``now``."""
        urgent = False
        for instruction in instructions:
            if isinstance(instruction, StartRun):
                job = instruction.job
                if job.job_id not in self._running:
                    self._runs += 1
                self._running[job.job_id] = _Running(self._runs, job.job_type, now)
                self._running[job.job_id].fields = {"status": "starting", "progress": 0.0, "message": ""}
                urgent = True
            elif isinstance(instruction, Send):
                urgent |= self._on_send(instruction.message, now)
        if not (urgent or (self._dirty and now - self._published_at >= self.interval)):
            return []
        self._published_at, self._dirty = now, False
        return [self._update(now)]

    def _on_send(self, message: object, now: float) -> bool:
        if isinstance(message, JobStatus) and message.job_id in self._running:
            running = self._running[message.job_id]
            running.fields = {
                "status": message.status,
                "progress": message.progress,
                "message": message.message,
            }
            if message.metrics is not None:
                running.fields["metrics"] = _metrics(message.metrics)
            self._dirty = True
            return False
        outcome = outcome_of(message)
        job_id = getattr(message, "job_id", None)
        if outcome is None or job_id not in self._running:
            return False
        ended = self._running.pop(job_id)
        self._last = {
            "run": ended.run,
            "job_type": ended.job_type,
            "outcome": outcome,
            "duration_seconds": round(now - ended.started_at, 3),
        }
        return True

    def _update(self, now: float) -> dict[str, Any]:
        running = next(iter(self._running.values()), None)
        update: dict[str, Any] = {"job": None}
        if running is not None:
            elapsed = round(now - running.started_at, 3)
            update["job"] = {
                "run": running.run,
                "job_type": running.job_type,
                "elapsed_seconds": elapsed,
                **running.fields,
            }
        if self._last is not None:
            update["last_job"] = self._last
        return update


def _metrics(metrics: Any) -> dict[str, float]:
    numbers = {key: value for key, value in attrs.asdict(metrics).items() if isinstance(value, int | float)}
    numbers.update(metrics.extra)
    return numbers


def slots_metadata(
    status: WorkerStatus, view: SlotsView, cpu_memory_mb: int, slots: Sequence[Slot] = ()
) -> dict[str, Any]:
    """The metadata update for the worker's slots and queue (docs/protocol.md, "Discovery"): derived from
    the core's view, naming no job (issue 10). `cpu_memory_mb` is advertised when the slots have no GPU;
    `slots` (the worker's own) give each GPU slot's `model` when known."""
    models = {slot.index: slot.model for slot in slots if slot.model}
    gpu_slots = [(memory, state) for _, gpus, memory, state in view.slots if gpus]
    free = [memory for memory, state in gpu_slots if state == "available"]
    memory = max(free or [m for m, _ in gpu_slots], default=cpu_memory_mb) if gpu_slots else cpu_memory_mb
    return {
        "properties": {
            "status": status.value,
            "slots": len(view.slots),
            "free_slots": view.free_slots,
            "queue_length": view.queue_length,
            "queue_free": max(view.queue_size - view.queue_length, 0),
            "gpu_memory_mb": memory,
            "max_concurrent_jobs": len(view.slots),
        },
        "slots": [
            {"index": index, "gpus": list(gpus), "memory_mb": memory_mb, "state": state}
            | ({"model": models[index]} if index in models else {})
            for index, gpus, memory_mb, state in view.slots
        ],
        "queue": {"length": view.queue_length, "size": view.queue_size},
        "running": view.running,
    }
