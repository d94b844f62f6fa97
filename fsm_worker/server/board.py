"""What the dashboard shows of one room: a pure object fed snapshots of the room's peers (no IO).

The server learns about jobs only from what workers publish in their discovery metadata (the worker's
`fsm_worker.worker.summary`): ``properties.status``, ``metadata.job`` (the running job's progress and
metrics) and ``metadata.last_job`` (how the last one ended). Neither names the job (issue 10): a run is shown
as its worker and the worker's run number, ``"worker-1 #3"`` (its ``label``). From successive snapshots the
board keeps each running job's progress/loss series (for the plot) and a bounded list of recent jobs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

WORKER_FIELDS = (
    "status",
    "gpu_model",
    "gpu_memory_mb",
    "cuda_version",
    "max_concurrent_jobs",
    "supported_job_types",
    "hostname",
)


class PeerLike(Protocol):
    """A connected peer as the registry lists it."""

    @property
    def peer_id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


@attrs.frozen
class BoardLimits:
    """Bounds of what one room's board remembers."""

    recent_jobs: int = 50
    series_jobs: int = 20
    points_per_job: int = 1000


def _label(worker_id: str, job: Mapping[str, Any]) -> str | None:
    """How the board names a run: its worker and the worker's run number (None when malformed)."""
    run = job.get("run")
    if not isinstance(run, int) or isinstance(run, bool):
        return None
    return f"{worker_id} #{run}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@attrs.define
class RoomBoard:
    """Workers, clients, running jobs with their series, and recent jobs of one room."""

    limits: BoardLimits = attrs.Factory(BoardLimits)
    workers: list[dict[str, Any]] = attrs.Factory(list)
    clients: int = 0
    series: OrderedDict[str, list[list[float | None]]] = attrs.Factory(OrderedDict)
    recent: OrderedDict[str, dict[str, Any]] = attrs.Factory(OrderedDict)
    version: int = 0

    def observe(self, peers: Iterable[PeerLike], now: float) -> bool:
        """Take a snapshot of the room at wall-clock ``now``; returns whether anything visible changed."""
        before = self.view()
        workers: list[dict[str, Any]] = []
        clients = 0
        for peer in sorted(peers, key=lambda p: p.peer_id):
            if peer.role != "worker":
                clients += 1
                continue
            workers.append(self._worker(peer, now))
        self.workers, self.clients = workers, clients
        changed = self.view() != before
        if changed:
            self.version += 1
        return changed

    def _worker(self, peer: PeerLike, now: float) -> dict[str, Any]:
        metadata = peer.metadata if isinstance(peer.metadata, Mapping) else {}
        props = metadata.get("properties")
        props = props if isinstance(props, Mapping) else {}
        worker: dict[str, Any] = {"peer_id": peer.peer_id, "tags": metadata.get("tags") or []}
        worker.update({key: props[key] for key in WORKER_FIELDS if key in props})
        job = metadata.get("job")
        if isinstance(job, Mapping) and (label := _label(peer.peer_id, job)) is not None:
            worker["job"] = {**job, "label": label}
            self._extend_series(label, job)
        last = metadata.get("last_job")
        if isinstance(last, Mapping) and (label := _label(peer.peer_id, last)) is not None:
            self._record_end(peer.peer_id, label, last, now)
        return worker

    def _extend_series(self, job_id: str, job: Mapping[str, Any]) -> None:
        metrics = job.get("metrics")
        loss = _number(metrics.get("loss")) if isinstance(metrics, Mapping) else None
        point = [_number(job.get("elapsed_seconds")), _number(job.get("progress")), loss]
        points = self.series.setdefault(job_id, [])
        self.series.move_to_end(job_id)
        if points and points[-1] == point:
            return
        points.append(point)
        if len(points) > self.limits.points_per_job:  # keep the shape: drop every other old point
            points[:] = (
                points[: -self.limits.points_per_job // 2 : 2] + points[-self.limits.points_per_job // 2 :]
            )
        while len(self.series) > self.limits.series_jobs:
            self.series.popitem(last=False)

    def _record_end(self, worker_id: str, label: str, last: Mapping[str, Any], now: float) -> None:
        ended = {
            "label": label,
            "worker": worker_id,
            "job_type": last.get("job_type"),
            "outcome": last.get("outcome"),
            "duration_seconds": _number(last.get("duration_seconds")),
        }
        seen = self.recent.get(label)
        if seen is not None and {k: v for k, v in seen.items() if k != "seen_at"} == ended:
            return  # the same end, published again (a restarted worker counts its runs from 1 again)
        self.recent.pop(label, None)
        self.recent[label] = {**ended, "seen_at": now}
        while len(self.recent) > self.limits.recent_jobs:
            self.recent.popitem(last=False)

    def view(self) -> dict[str, Any]:
        """Everything the page shows, as JSON."""
        return {
            "workers": self.workers,
            "clients": self.clients,
            "recent_jobs": list(reversed(self.recent.values())),
            "series": {job_id: list(points) for job_id, points in self.series.items()},
        }
