"""The coordinator's actions: what each row of the table does (`table.py`), and what they share.

`CoordinatorActions` is the half of `JobCoordinator` that the rows' `after` callbacks name; the entry point,
routing, guards and invariants are in `coordinator.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsm_worker.protocol.messages import (
    MAX_TEXT_LENGTH,
    AppError,
    JobCancelled,
    JobComplete,
    JobError,
    JobEvent,
    JobFailed,
    JobHead,
    JobRequest,
    JobResponse,
    JobResult,
    JobStatus,
    JobSync,
    Message,
    ReservationExpired,
    RtcAnswer,
    RtcOffer,
)
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelFailed,
    RunFailed,
    RunProgress,
    RunSucceeded,
)
from fsm_worker.protocol.worker.instructions import (
    AcceptOffer,
    CleanupJob,
    CloseChannel,
    Instruction,
    PruneJobDirs,
    PublishResults,
    Send,
    StartRun,
    StopRun,
)
from fsm_worker.protocol.worker.metrics import wire_metrics
from fsm_worker.protocol.worker.states import Intake, Job, Reservation, WorkerState
from fsm_worker.protocol.worker.values import CoordinatorConfig, Retained, Stimulus, presents_key

__all__ = ["CoordinatorActions", "CoordinatorConfig", "Retained", "Stimulus", "presents_key"]

if TYPE_CHECKING:
    from fsm_worker.protocol.worker.placement import JobRecord

log = logging.getLogger("fsm_worker.protocol.worker.coordinator")

#: The refusal of a keyless `job_request` while `require_job_key` is on: what is missing and both fixes.
MISSING_KEY = (
    "job_key_sha256 is missing: this worker requires a per-job key (require_job_key); send job_key_sha256 "
    "(sha256 hex of the job's key), or its owner sets require_job_key = false"
)


class CoordinatorActions:
    """The actions of the table's rows; `JobCoordinator` supplies the state they read and change."""

    capabilities: WorkerCapabilities
    state: WorkerState
    intake: Intake
    reservation: Reservation | None
    current_job: Job | None
    config: CoordinatorConfig
    _started_at: float
    _history: list[JobEvent]
    #: Whether the current job's first input bytes arrived (`InputsStarted`): ends the first-input deadline.
    first_input_seen: bool
    _retained: dict[str, Retained]
    _offers: dict[str, str]
    _out: list[Instruction]
    _mark: int
    _check_config: Callable[[JobRequest], list[str]]

    _jobs: dict[str, JobRecord]  # every job held: reserved, queued or in a slot
    _estimate: Callable[[JobRequest], float]
    #: The record of the job whose machine the current trigger drives (`placement.JobRecord`).
    _focus: JobRecord

    def _devices(self, job_id: str) -> str | None:
        return None  # placement.py: the job's slots' GPUs

    def held_jobs(self) -> list[tuple[Job, WorkerState]]:
        """Every assigned job held here, with its state (adopted, or ended, after a restart)."""
        return [(r.current_job, r.state) for r in self._jobs.values() if r.current_job is not None]

    def retained_job_ids(self) -> list[str]:
        """Finished jobs whose files are kept for their clients."""
        return [job_id for job_id, retained in self._retained.items() if retained.files_kept]

    def for_current_job(self, s: Stimulus) -> bool:
        job = self.current_job
        return (
            job is not None
            and (job.job_id, job.client_id) == (s.job_id, s.sender)
            and presents_key(job.request.job_key_sha256, s)
        )

    # --- actions: requests and reservations -------------------------------------------------------------------

    def reject_draining(self, s: Stimulus) -> None:
        self._reply_rejected(s, "draining", ["the worker is shutting down"])

    def accept_request(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobRequest) and s.sender is not None
        estimate = self._estimate(s.message)
        self.reservation = Reservation(
            s.message.job_id, s.sender, s.message, estimate, s.now + self.config.reservation_timeout
        )
        log.info("job %s reserved for %s (estimated %.2f min)", s.job_id, s.sender, estimate)
        self._send(s.sender, JobResponse(s.message.job_id, True, estimated_duration_minutes=estimate))

    def reject_incompatible(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobRequest)
        reasons = self._refusals(s.message)
        log.info("job %s from %s is incompatible: %s", s.job_id, s.sender, "; ".join(reasons))
        self._reply_rejected(s, "incompatible", reasons)

    def accept_again(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        assert held is not None and s.sender is not None
        self._send(s.sender, JobResponse(held.job_id, True, held.estimated_duration_minutes))

    def reject_busy(self, s: Stimulus) -> None:
        self._reply_rejected(s, "busy", None)

    def expire_reservation(self, s: Stimulus) -> None:
        held = self._take_reservation()
        log.info("reservation of job %s for %s expired", held.job_id, held.client_id)
        self._send(held.client_id, ReservationExpired(held.job_id))

    # --- actions: assignment, cancellation, soft stop ---------------------------------------------------------

    def assign(self, s: Stimulus) -> None:
        held = self._take_reservation()
        self.current_job = Job(
            held.job_id, held.client_id, held.request, s.now, held.estimated_duration_minutes
        )
        self._history, self.first_input_seen = [], False
        log.info(
            "Job assigned and ready for WebRTC connection (job %s, client %s)", held.job_id, held.client_id
        )

    def ignore_duplicate(self, s: Stimulus) -> None:
        log.info("duplicate job_assignment for running job %s ignored", s.job_id)

    def refuse_assignment(self, s: Stimulus) -> None:
        assert s.sender is not None
        log.warning("job_assignment for %s from %s matches no reservation of it", s.job_id, s.sender)
        text = "no reservation for this job is held for you"
        self._send(s.sender, AppError("INVALID_ASSIGNMENT", text, s.job_id))

    def cancel_reservation(self, s: Stimulus) -> None:
        held = self._take_reservation()
        self._send(held.client_id, JobCancelled(held.job_id))
        log.info("reservation of job %s cancelled by its client", held.job_id)

    def acknowledge_cancel(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobCancelled(job_id, seq), keep_files=False)

    def stop_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def note_cancel(self, s: Stimulus) -> None:
        log.info("job %s: cancelled by its client while its run stops", s.job_id)

    def ignore_cancel(self, s: Stimulus) -> None:
        log.warning("job_cancel for %s from %s: not a job of this sender here; ignored", s.job_id, s.sender)

    def stop_early(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.info("job %s: its client stops it early", s.job_id)
        self._out.append(StopRun(self.current_job.job_id, graceful=True))

    def ignore_stop(self, s: Stimulus) -> None:
        log.warning(
            "job_stop for %s from %s: not a running job of this sender here; ignored", s.job_id, s.sender
        )

    # --- actions: data channel and replay ---------------------------------------------------------------------

    def accept_offer(self, s: Stimulus) -> None:
        assert isinstance(s.message, RtcOffer) and s.sender is not None
        job_id = s.message.job_id
        self._offers[job_id] = s.message.sdp
        current = self.current_job is not None and self.current_job.job_id == job_id
        uploading = self.state in (WorkerState.AWAITING_INPUTS, WorkerState.QUEUED_ASSIGNED)
        committed = not current or not uploading or self._focus.committed
        self._out.append(
            AcceptOffer(job_id, s.sender, s.message.sdp, s.message.options, committed, not current)
        )

    def ignore_repeated_offer(self, s: Stimulus) -> None:
        log.info("repeated rtc_offer for job %s ignored (delivered twice)", s.job_id)

    def refuse_offer(self, s: Stimulus) -> None:
        assert s.sender is not None
        log.warning("rtc_offer for %s from %s refused: not its assigned client", s.job_id, s.sender)
        self._send(s.sender, AppError("NOT_ASSIGNED", "this job is not assigned to you here", s.job_id))

    def send_answer(self, s: Stimulus) -> None:
        assert isinstance(s.event, ChannelAnswered)
        answer = s.event
        self._send(answer.client_id, RtcAnswer(answer.job_id, answer.sdp, answer.options))

    def ignore_channel_event(self, s: Stimulus) -> None:
        log.info("data channel event for job %s ignored: the job is gone", s.job_id)

    def note_channel_open(self, s: Stimulus) -> None:
        log.info("data channel open for job %s", s.job_id)

    def report_channel_failure(self, s: Stimulus) -> None:
        assert isinstance(s.event, ChannelFailed)
        failure = s.event
        log.warning("data channel for job %s failed: %s", failure.job_id, failure.reason)
        self._offers.pop(failure.job_id, None)
        self._out.append(CloseChannel(failure.job_id))
        text = failure.reason[:MAX_TEXT_LENGTH]
        self._send(failure.client_id, AppError("RTC_SETUP_FAILED", text, failure.job_id))

    def note_channel_closed(self, s: Stimulus) -> None:
        log.info("data channel of job %s closed", s.job_id)

    def report_channels_lost(self, s: Stimulus) -> None:
        """After a restart: every data channel lived in the old process; tell each one's client (it reopens)."""
        jobs = self.held_jobs()
        log.info("restored: %s", ", ".join(f"{job.job_id}: {state.value}" for job, state in jobs) or "no job")
        held = {job.job_id: job.client_id for job, _ in jobs}
        for job_id in list(self._offers):
            retained = self._retained.get(job_id)
            client = held.get(job_id) or (retained.client_id if retained is not None else None)
            if client is None:
                continue
            text = "the worker restarted: its data channel for this job is gone; offer a new one"
            self._send(client, AppError("CHANNEL_LOST", text, job_id))
        self._offers.clear()

    def keep_held_job_dirs(self, s: Stimulus) -> None:
        """At start: only the work directories of the jobs held or retained with their files are reachable."""
        held = [job.job_id for job, _ in self.held_jobs()]
        self._out.append(PruneJobDirs((*held, *self.retained_job_ids())))

    def note_files_removed(self, s: Stimulus) -> None:
        log.info("job %s: work directory removed", s.job_id)

    def replay_events(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobSync) and s.sender is not None
        retained = self._retained.get(s.message.job_id)
        history = self._history if self.for_current_job(s) or retained is None else retained.history
        upto = s.message.upto_seq
        for message in history[s.message.after_seq : upto]:
            self._send(s.sender, message)
        if upto is not None:  # a bounded sync: say how far the job goes (what the client lacks, it lost)
            self._send(s.sender, JobHead(s.message.job_id, len(history), upto))

    def refuse_sync(self, s: Stimulus) -> None:
        assert s.sender is not None
        self._send(s.sender, AppError("UNKNOWN_JOB", "no such job of yours here", s.job_id))

    # --- actions: the run -------------------------------------------------------------------------------------

    def start_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self._out.append(StartRun(self.current_job, self._devices(self.current_job.job_id)))

    def report_starting(self, s: Stimulus) -> None:
        job = self.current_job
        assert job is not None
        self._started_at = s.now
        self._job_event(
            lambda seq, job_id: JobStatus(job_id, "starting", 0.0, f"starting {job.job_type}", seq)
        )

    def report_progress(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunProgress)
        progress = min(max(s.event.progress, 0.0), 1.0)
        text = s.event.message[:MAX_TEXT_LENGTH]
        metrics = wire_metrics(s.event.metrics)
        self._job_event(lambda seq, job_id: JobStatus(job_id, "running", progress, text, seq, metrics))

    def report_complete(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunSucceeded)
        result, metrics = s.event.result, wire_metrics(s.event.metrics)
        self._finish_job(s, lambda seq, job_id: JobComplete(job_id, result, seq, metrics), keep_files=True)

    def report_stopped_early(self, s: Stimulus) -> None:
        if isinstance(s.event, RunSucceeded):
            result, metrics = s.event.result, wire_metrics(s.event.metrics)
        else:  # stopped before it could report a result: the time it ran, no model size
            result, metrics = JobResult(round((s.now - self._started_at) / 60, 3), None), None

        def build(seq: int, job_id: str) -> JobEvent:
            return JobComplete(job_id, result, seq, metrics, stopped_early=True)

        self._finish_job(s, build, keep_files=True)

    def report_failed(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunFailed)
        error = s.event.error
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=True)

    def ignore_stale_run_event(self, s: Stimulus) -> None:
        log.debug("run event for %s ignored: not the current run, or not now", s.job_id)

    def note_inputs_started(self, s: Stimulus) -> None:
        self.first_input_seen = True

    def fail_first_input_overdue(self, s: Stimulus) -> None:
        error = JobError(
            "FIRST_INPUT_TIMEOUT",
            f"no input bytes arrived within first_input_timeout ({self.config.first_input_timeout:g} s)",
            recoverable=True,
        )
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=False)

    def fail_awaiting_inputs(self, s: Stimulus) -> None:
        error = JobError("INPUT_TIMEOUT", "the job's inputs did not arrive in time", recoverable=True)
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=False)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _refusals(self, request: JobRequest) -> list[str]:
        reasons = self.capabilities.incompatibilities(request) or self._check_config(request)
        if request.job_id in self._retained:
            reasons.append(f"job id {request.job_id!r} was already used on this worker")
        if self.config.require_job_key and request.job_key_sha256 is None:
            reasons.append(MISSING_KEY)
        return reasons

    def _reply_rejected(self, s: Stimulus, reason: str, details: list[str] | None) -> None:
        assert s.sender is not None and s.job_id is not None
        self._send(
            s.sender, JobResponse(s.job_id, False, reason=reason, details=tuple(details or ()) or None)
        )

    def _take_reservation(self) -> Reservation:
        held = self.reservation
        assert held is not None
        self.reservation = None
        return held

    def _job_event(self, build: Callable[[int, str], JobEvent]) -> None:
        job = self.current_job
        assert job is not None
        message = build(len(self._history) + 1, job.job_id)
        self._history.append(message)
        self._send(job.client_id, message)

    def _finish_job(self, s: Stimulus, build: Callable[[int, str], JobEvent], keep_files: bool) -> None:
        """Send the job's terminal event, keep its history (and maybe files) for its client, and let it go."""
        self._job_event(build)
        job = self.current_job
        assert job is not None
        expires = s.now + self.config.retention
        self._retained[job.job_id] = Retained(
            job.client_id, expires, self._history, keep_files, job.request.job_key_sha256
        )
        if keep_files:
            self._out.append(PublishResults(job.job_id))
        else:
            self._forget_files(job.job_id, reclaim=True)
        self.current_job, self._history = None, []

    def _forget_files(self, job_id: str, *, reclaim: bool = False) -> None:
        self._offers.pop(job_id, None)
        self._out.append(CleanupJob(job_id, reclaim))

    def _send(self, to: str, message: Message) -> None:
        self._out.append(Send(to, message))
