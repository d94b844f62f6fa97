"""The worker host: what a worker program embeds.

It wires the sans-IO core (`JobCoordinator`) to its shells: the signaling connection (`Outbox` sends), the
jobs' data channels and files (`JobChannels`) and the job runner (`JobRuns`). Every input becomes a core
event, fed in arrival order from the one event loop (`_feed`); the instructions the core returns are carried
out in its order; every task spawned for one ends by feeding its result back as an event. The host keeps no
protocol state and decides nothing: each `if` in it is about IO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.jobs.registry import JobTypeRegistry, default_registry
from fsm_worker.protocol.worker import events as core
from fsm_worker.protocol.worker import instructions as out
from fsm_worker.protocol.worker.coordinator import CoordinatorConfig, JobCoordinator
from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.protocol.worker.values import replay_fingerprint
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import install_rtc_patches
from fsm_worker.shells.signaling import SignalingClient
from fsm_worker.worker.channels import JobChannels
from fsm_worker.worker.config import WorkerConfig
from fsm_worker.worker.doctor import JOURNAL_FILE
from fsm_worker.worker.gpus import detect_capabilities, detect_slots, with_slots
from fsm_worker.worker.holds import HoldLink
from fsm_worker.worker.hooks import HostHooks
from fsm_worker.worker.identity import ResumeSecret
from fsm_worker.worker.job_types import ConfiguredJobTypes
from fsm_worker.worker.journal import Journal, JournaledCore
from fsm_worker.worker.metrics import WorkerMetrics
from fsm_worker.worker.outbox import Outbox
from fsm_worker.worker.runs import JobRuns
from fsm_worker.worker.summary import slots_metadata

__all__ = ["WorkerConfig", "WorkerHost"]

log = logging.getLogger(__name__)

Task = Coroutine[Any, Any, core.Event | None]


class WorkerHost:
    """A worker: `await start()`, then `await wait_closed()`; `await shutdown()` stops it gracefully."""

    def __init__(
        self, config: WorkerConfig, registry: JobTypeRegistry | None = None, hooks: HostHooks | None = None
    ) -> None:
        self.config = config
        self.hooks = hooks or HostHooks()  # observation only (worker/hooks.py)
        self.registry = registry or default_registry()
        job_types = ConfiguredJobTypes(self.registry, config.job_types)
        overrides = {"gpu_memory_mb": config.gpu_memory_mb, "gpu_model": config.gpu_model,
                     "cuda_version": config.cuda_version}  # fmt: skip
        self.slots = detect_slots(config.gpus, config.slots, config.gpu_memory_mb)
        self.capabilities = with_slots(
            detect_capabilities(job_types.names, overrides), self.slots, config.gpu_model is not None
        )
        core_config = CoordinatorConfig(
            config.reservation_timeout,
            config.input_timeout,
            config.retention,
            first_input_timeout=config.first_input_timeout,
            queue_size=config.queue_size,
            queue_lease=config.queue_lease,
            max_jobs_per_client=config.max_jobs_per_client,
            queue_bypass_limit=config.queue_bypass_limit,
            require_job_key=config.require_job_key,
            shutdown_policy=config.shutdown_policy,
            shutdown_timeout=config.shutdown_timeout,
            kill_grace=config.kill_grace,
        )
        coordinator = JobCoordinator(self.capabilities, core_config, estimator=job_types.estimate,
                                     check_config=job_types.check_config, slots=self.slots)  # fmt: skip
        self.core: JobCoordinator | JournaledCore = coordinator
        self.journaled: JournaledCore | None = None
        self.restored_events = 0
        if (
            config.journal
        ):  # restore before anything is advertised: the metadata below shows the restored status
            fingerprint = {"core": replay_fingerprint(core_config), "capabilities": attrs.asdict(self.capabilities),
                           "slots": [attrs.asdict(slot) for slot in self.slots]}  # fmt: skip
            journal = Journal(config.workdir / JOURNAL_FILE, fingerprint, durable=config.journal_durable)
            self.journaled = self.core = JournaledCore(coordinator, journal)
            self.restored_events = self.journaled.restore(time.monotonic())  # the loop's clock
        self._pending: list[core.Event] = []  # with the journal: the events of this loop turn (group commit)
        self.runs = JobRuns(
            self.registry,
            self._feed,
            timeout=config.job_timeout,
            kill_grace=config.kill_grace,
            env_allow=config.job_env_allow,
            job_lifetime=config.job_lifetime,
            log_max_bytes=config.job_log_max_bytes,
        )
        self.rtc_options = RtcOptions.from_settings(
            config.ice_servers, loopback_only=config.loopback_only, fast_path=config.rtc_fast_path
        )
        self.channels = JobChannels(config.workdir, self._feed, rtc_options=self.rtc_options,
                                    setup_timeout=config.rtc_setup_timeout,
                                    max_upload_bytes=config.max_upload_bytes,
                                    max_input_files=config.max_input_files,
                                    store_retention=config.store_retention,
                                    store_quota_bytes=config.store_quota_bytes)  # fmt: skip
        published = slots_metadata(
            self.core.status, self.core.view(), self.capabilities.gpu_memory_mb, self.slots
        )
        properties = {**self.capabilities.as_properties(), **published.pop("properties")}
        if not config.publish_hostname:  # the room sees discovery metadata: the host name only on request
            properties.pop("hostname", None)
        self.metrics = WorkerMetrics(
            slots=self.capabilities.max_concurrent_jobs,
            gpu_memory_mb=self.capabilities.gpu_memory_mb,
            live_transfers=self.channels.live_stats,
            publish_summary=config.publish_job_summary,
        )
        self.channels.on_transfer_closed = self.metrics.transfer_closed
        self.identity = ResumeSecret(config.workdir, config.peer_id)
        self.signaling = SignalingClient(
            config.server_url,
            config.token,
            config.peer_id,
            role="worker",
            metadata={
                "tags": list(config.tags),
                "properties": properties,
                **published,
                "job_schemas": {
                    name: schema
                    for name, schema in self.registry.describe().items()
                    if name in self.capabilities.supported_job_types
                },
            },
            on_peer_message=self._on_peer_message,
            on_connect=self._on_link_up,
            resume_secret=self.identity.load(),
            max_inflight_per_peer=config.max_inflight_per_peer,
            max_queued_per_peer=config.max_queued_per_peer,
        )
        self.holds = HoldLink(self.signaling, self._feed)  # the room's hold cap (worker/holds.py)
        self.outbox = Outbox(self.signaling)
        self.outbox.on_delivered = self.hooks.after_delivery
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[core.Event | None]] = set()
        self._drained = asyncio.Event()  # the core said `Drained`
        self._closed = asyncio.Event()
        self._stopping = False

    @property
    def peer_id(self) -> str:
        return self.config.peer_id

    @property
    def status(self) -> WorkerStatus:
        return self.core.status

    def job_dir(self, job_id: str) -> Path:
        return self.channels.job_dir(job_id)

    # --- life cycle -------------------------------------------------------------------------------------------

    async def start(self, connect_timeout: float = 10.0) -> None:
        """Connect to the signaling server and start taking jobs."""
        install_rtc_patches()  # idempotent; the per-connection options live in `rtc_options`
        await self._prepare()
        self.outbox.start()
        if self.config.metrics_port is not None:
            await self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
        try:
            await self.signaling.connect(timeout=connect_timeout)
        except TimeoutError:
            url = self.config.server_url
            raise ConnectionError(
                f"could not reach the signaling server at {url} within {connect_timeout:g} s"
            ) from None
        self.identity.save(self.signaling.resume_secret)
        if self.restored_events:
            self._recover()
        log.info("worker %s ready: %s", self.peer_id, self.capabilities)

    async def _prepare(self) -> None:
        """Before connecting: `Started` (the core answers which job directories to keep), carried out in full."""
        self._feed(core.Started())
        while self._pending or self._tasks:  # the journal's turn, then the tasks it spawned (the pruning)
            if self._pending:
                await asyncio.sleep(0)
            else:
                await asyncio.wait(list(self._tasks))

    def _recover(self) -> None:
        """After a restore (what expired while the worker was down was reported on `Started`): the core tells
        the clients of the old process's data channels, and answers for each run it held (protocol/worker/adoption.py): `AdoptRun`
        for a detached run (carried out by the runs shell: it keeps running and its end is reported once, or
        its real end if it ended meanwhile; `LOST` if it left no trace), or the run's end when runs die with
        the worker.
        """
        log.info("restored %d journaled events", self.restored_events)  # the core logs the jobs it holds
        offsets = self.journaled.resume_offsets if self.journaled is not None else {}
        self._feed(core.Restored(self.config.job_lifetime == "detached", dict(offsets)))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def shutdown(self, cancel_running: bool | None = None) -> None:
        """Stop taking jobs, finish (or cancel) the current one, deliver what is pending, disconnect.

        The core drains (`Drain`; `cancel_running` None: its `shutdown_policy`), holds the drain's deadlines and
        says `Drained`; then the IO closes. A second call while the first waits (a second Ctrl+C) stops the runs.
        """
        if self._stopping:  # the close below is under way: only tell the core
            self._feed(core.Drain(cancel_running=True))
            await self._closed.wait()
            return
        self._stopping = True
        self._feed(core.Drain(cancel_running))
        await self._drained.wait()
        await self.runs.shutdown()
        await self.holds.close()
        await self.outbox.close()
        await self.channels.close_all()
        await self.metrics.close()
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.signaling.close()
        if self.journaled is not None:  # a drained core is not one to restore (docs/durability.md)
            self.journaled.journal.reset()
            self.journaled.journal.close()
        self._closed.set()
        log.info("worker %s shut down", self.peer_id)

    @property
    def can_detach(self) -> bool:
        """Whether `detach()` keeps what it leaves: detached runs, and a journal to find them again."""
        return self.config.job_lifetime == "detached" and self.journaled is not None

    async def detach(self) -> None:
        """Stop for a restart (an upgrade): leave detached jobs running and keep the journal.

        Nothing is drained: reservations, the current job and retained results stay in the journal, and a
        worker started again with the same workdir restores them and adopts the runs (their clients keep
        following: `job_sync`, `CHANNEL_LOST` for their data channels). Without `can_detach` this is
        `shutdown()`.
        """
        if not self.can_detach:
            await self.shutdown()
            return
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        left = await self.runs.detach(self.config.kill_grace)
        await self.holds.close()
        await self.outbox.close()  # what committed events still had to say
        await self.channels.close_all()
        await self.metrics.close()
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.signaling.close()
        assert self.journaled is not None
        if (
            self._pending
        ):  # handled and committed; what they would do is left undone, as in a crash after commit
            batch, self._pending = self._pending, []
            for event in batch:
                self._handle(event)
        self.journaled.commit()
        self.journaled.journal.close()
        self._closed.set()
        log.info("worker %s stopped for a restart; %d job(s) left running: %s", self.peer_id, len(left), left)

    # --- events into the core, instructions out of it ---------------------------------------------------------

    def _feed(self, event: core.Event) -> None:
        """Hand one event to the core and carry out what it says, in its order. Never raises.

        With the journal, the events of one loop turn are handled together, committed in one transaction, and
        only then are their instructions carried out (write-ahead with group commit).
        """
        if self.journaled is None:
            self._carry_out(self._handle(event))
            return
        self._pending.append(event)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        handled = [self._handle(event) for event in batch]
        assert self.journaled is not None
        try:
            self.journaled.commit()
        except Exception:  # the journal is broken (disk full, …): keep serving, but say so loudly
            log.exception("writing the journal failed; the events of this turn will not survive a restart")
        if self.hooks.after_commit is not None:
            self._observe(self.hooks.after_commit, [i for instructions in handled for i in instructions])
        for instructions in handled:
            self._carry_out(instructions)

    @staticmethod
    def _observe(hook: Callable[[list[out.Instruction]], None], instructions: list[out.Instruction]) -> None:
        try:
            hook(instructions)
        except Exception:
            log.exception("the after_commit hook failed")

    def _handle(self, event: core.Event) -> list[out.Instruction]:
        try:
            return self.core.handle(event, asyncio.get_running_loop().time())
        except Exception:
            log.exception("the core failed on %r; state kept", event)
            return []

    def _carry_out(self, instructions: list[out.Instruction]) -> None:
        for update in self.metrics.observe(instructions, asyncio.get_running_loop().time()):
            self.outbox.update_metadata(update)  # the dashboard's job summary (worker/summary.py)
        for instruction in instructions:
            try:
                self._execute(instruction)
            except Exception:
                log.exception("carrying out %r failed", instruction)
        self._arm_timer()

    async def _on_peer_message(self, sender: str, payload: dict[str, Any]) -> None:
        self._feed(core.PeerMessage(sender, payload))

    def _on_link_up(self) -> None:
        self._feed(core.HoldsOffered(self.signaling.holds_offered))

    def _execute(self, instruction: out.Instruction) -> None:
        match instruction:
            case out.Send(to=to, message=message):
                self.outbox.send(to, message)
            case out.Advertise(status=status, view=view) if view is not None:
                self.outbox.update_metadata(
                    slots_metadata(status, view, self.capabilities.gpu_memory_mb, self.slots)
                )
            case out.StartRun(job=job, cuda_visible_devices=devices):
                self._spawn(self.runs.start(job, self.job_dir(job.job_id), devices), f"run-{job.job_id}")
            case out.AdoptRun(job=job, resume_offset=offset, stop=stop):
                self._spawn(
                    self.runs.adopt(job, self.job_dir(job.job_id), offset, stop=stop), f"adopt-{job.job_id}"
                )
            case out.StopRun(job_id=job_id, graceful=graceful):
                self._spawn(self.runs.stop(job_id, graceful), f"stop-{job_id}")
            case out.AcceptOffer(job_id=job_id):
                self._spawn(self.channels.open(instruction), f"offer-{job_id}")
            case out.PublishResults(job_id=job_id):
                self.channels.publish(job_id)
            case out.CloseChannel(job_id=job_id):
                self._spawn(self.channels.close(job_id), f"close-{job_id}")
            case out.CleanupJob(job_id=job_id, reclaim=reclaim):
                self._spawn(self.channels.remove(job_id, reclaim=reclaim), f"cleanup-{job_id}")
            case out.PruneJobDirs(keep=keep):
                self._spawn(self.channels.prune(keep), "prune-job-dirs")
            case out.Drained(reason=reason):
                if reason is not None:
                    log.error("shutting down with jobs left: %s", reason)
                self._drained.set()
            case core.ClaimHold() | core.ReleaseHold() | core.SyncHolds():
                self.holds.put(instruction)

    def _spawn(self, task: Task, name: str) -> None:
        spawned = asyncio.create_task(task, name=name)
        self._tasks.add(spawned)
        spawned.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[core.Event | None]) -> None:
        """Feed the event a task ended with (Dask's `_handle_stimulus_from_task`)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
        elif (event := task.result()) is not None:
            self._feed(event)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._feed, core.TimerFired())
