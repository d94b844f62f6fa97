"""The worker's Prometheus metrics (``prometheus-client``), fed from the core through one hook.

`WorkerMetrics.observe(instructions, now)` reads what the core decided — runs started, terminal job
messages sent — and returns the dashboard summary updates (`fsm_worker.worker.summary`) to publish. Bytes
moved on the data channels are read from the transfer endpoints' own counters at scrape time. `serve`
exposes ``GET /metrics`` on the worker's own port (``WorkerConfig.metrics_port``). Every series:
docs/metrics.md.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from fsm_worker.protocol.worker.instructions import Instruction, Send, StartRun
from fsm_worker.worker.summary import JobSummary, outcome_of

log = logging.getLogger(__name__)

#: Job durations reach from seconds (tests, small jobs) to days (training runs).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, float("inf"))
#: How many ended jobs are remembered so that a replayed terminal message (`job_sync`) is not counted twice.
REMEMBERED_JOBS = 1024


class TransferStats(Protocol):
    """What the metrics read off a transfer endpoint's counters."""

    chunk_bytes_received: int
    chunk_bytes_sent: int


class _TransferCollector(Collector):
    def __init__(self, live: Callable[[], Iterable[TransferStats]]) -> None:
        self.live = live
        self.closed = {"upload": 0, "download": 0}

    def collect(self) -> Iterator[Metric]:
        totals = dict(self.closed)
        try:
            for stats in self.live():
                totals["upload"] += stats.chunk_bytes_received
                totals["download"] += stats.chunk_bytes_sent
        except Exception:  # a scrape never fails because of a channel closing meanwhile
            log.debug("reading live transfer counters failed", exc_info=True)
        family = CounterMetricFamily(
            "fsm_worker_transfer_bytes",
            "File bytes moved over data channels (upload: client to worker; download: results to client).",
            labels=["direction"],
        )
        for direction, value in totals.items():
            family.add_metric([direction], value)
        yield family


class WorkerMetrics:
    """Prometheus series of one worker, in a registry of its own (several hosts may share a process)."""

    def __init__(
        self,
        *,
        slots: int = 1,
        gpu_memory_mb: int = 0,
        live_transfers: Callable[[], Iterable[TransferStats]] = tuple,
        summary_interval: float = 0.5,
        publish_summary: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self.summary = JobSummary(interval=summary_interval)
        self.jobs = Counter(
            "fsm_worker_jobs", "Jobs that ended, by outcome.", ["outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "fsm_worker_job_duration_seconds",
            "Run time of jobs that started running, from start to their terminal message, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.runs_started = Counter("fsm_worker_runs_started", "Job runs started.", registry=self.registry)
        self.slots = Gauge("fsm_worker_slots", "Job slots of this worker.", registry=self.registry)
        self.slots_busy = Gauge("fsm_worker_slots_busy", "Slots running a job now.", registry=self.registry)
        self.queue = Gauge(
            "fsm_worker_queue_length", "Jobs waiting for a slot (no queue yet: 0).", registry=self.registry
        )
        self.gpu_memory = Gauge(
            "fsm_worker_gpu_memory_bytes", "GPU memory of this worker (0: no GPU).", registry=self.registry
        )
        self._slot_count = slots
        self._publish_summary = publish_summary
        self.slots.set(slots)
        self.gpu_memory.set(gpu_memory_mb * 1024 * 1024)
        self.transfers = _TransferCollector(live_transfers)
        self.registry.register(self.transfers)
        self._started: dict[str, float] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._runner: web.AppRunner | None = None
        #: The port ``/metrics`` is bound to once `serve` ran.
        self.port: int | None = None

    # --- the hook ---------------------------------------------------------------------------------------------

    def observe(self, instructions: Sequence[Instruction], now: float) -> list[dict[str, Any]]:
        """Count what the core decided at ``now``; returns the metadata updates of the job summary."""
        for instruction in instructions:
            if isinstance(instruction, StartRun):
                self._started[instruction.job.job_id] = now
                self.runs_started.inc()
            elif isinstance(instruction, Send):
                self._count_end(instruction.message, now)
        self.slots_busy.set(min(len(self._started), self._slot_count))
        updates = self.summary.observe(instructions, now)
        return updates if self._publish_summary else []

    def _count_end(self, message: object, now: float) -> None:
        outcome = outcome_of(message)
        job_id = getattr(message, "job_id", None)
        if outcome is None or not isinstance(job_id, str) or job_id in self._ended:
            return
        self._ended[job_id] = None
        if len(self._ended) > REMEMBERED_JOBS:
            self._ended.popitem(last=False)
        self.jobs.labels(outcome).inc()
        started = self._started.pop(job_id, None)
        if started is not None:
            self.duration.labels(outcome).observe(max(0.0, now - started))

    def transfer_closed(self, stats: TransferStats | None) -> None:
        """A data channel's endpoint closed: keep its bytes in the totals."""
        if stats is not None:
            self.transfers.closed["upload"] += stats.chunk_bytes_received
            self.transfers.closed["download"] += stats.chunk_bytes_sent

    # --- exposition -------------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> int:
        """Serve ``GET /metrics`` on ``host:port`` (0 picks a free port); returns the bound port."""

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("worker metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def close(self) -> None:
        """Stop serving ``/metrics``."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
