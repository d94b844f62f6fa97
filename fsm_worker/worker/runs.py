"""The worker's runs: carries out `StartRun`/`StopRun` with the job runner and answers with the core's events."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import attrs

from fsm_worker import logs
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import ErrorCode, JobSpec
from fsm_worker.protocol.worker.events import Event, RunEvent, RunFailed, RunProgress, RunStopped
from fsm_worker.protocol.worker.states import Job
from fsm_worker.shells.runner.environment import DEFAULT_ALLOW
from fsm_worker.shells.runner.joblog import DEFAULT_MAX_BYTES
from fsm_worker.shells.runner.run import EventSink
from fsm_worker.shells.runner.runner import Adoption, JobLifetime, JobRunner


class JobRuns:
    """One `JobRunner` (one run per job id, as many at once as the core starts: a run per slot); the run
    events it reports go straight to `sink` (the host's feed into the core)."""

    def __init__(
        self,
        registry: JobTypeRegistry,
        sink: EventSink,
        *,
        timeout: float | None,
        kill_grace: float,
        env_allow: tuple[str, ...] = (),
        job_lifetime: JobLifetime = "detached",
        log_max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.runner = JobRunner(registry, timeout=timeout, kill_grace=kill_grace,
                                env_allow=(*DEFAULT_ALLOW, *env_allow), job_lifetime=job_lifetime,
                                log_max_bytes=log_max_bytes)  # fmt: skip
        self.kill_grace = kill_grace
        self._sink = sink

    def _report(self, event: RunEvent) -> Awaitable[None] | None:
        logs.job_outcome(event)  # the worker's log line per finished run
        if isinstance(event, RunProgress):  # journaled with the event: where an adoption resumes
            event = attrs.evolve(event, resume_offset=self.runner.resume_offset(event.job_id))
        return self._sink(event)

    @staticmethod
    def _spec(job: Job, job_dir: Path, cuda_visible_devices: str | None = None) -> JobSpec:
        return JobSpec(job.job_id, job.job_type, job.config, job_dir, cuda_visible_devices)

    async def start(self, job: Job, job_dir: Path, cuda_visible_devices: str | None = None) -> Event | None:
        """Start the run (its events follow through the sink), or the failure when it cannot begin.

        Several runs go at once, one per slot; `cuda_visible_devices` is the job's slot's GPUs."""
        try:
            await self.runner.start(self._spec(job, job_dir, cuda_visible_devices), self._report)
        except Exception as error:  # a closed runner, or this job id already running
            message = f"the run could not start: {error}"
            return RunFailed(job.job_id, ErrorCode.HANDLER_ERROR, message, False)
        return None

    async def adopt(self, job: Job, job_dir: Path, offset: int, *, stop: bool | None = None) -> Event | None:
        """Take back the run of `job` that outlived a worker restart (its events follow through the sink).

        A run still going is supervised again (no second `RunStarted`); one that ended meanwhile reports its
        real end; one that left no trace is reported `LOST`. `stop` (graceful or not) stops a run still
        going: it was being stopped when the worker went down.
        """
        try:
            adoption = await self.runner.adopt(self._spec(job, job_dir), self._report, offset=offset)
        except Exception as error:  # a closed runner, or this job id already running
            message = f"the run could not be adopted after a restart: {error}"
            return RunFailed(job.job_id, ErrorCode.LOST, message, True)
        if adoption is Adoption.RUNNING and stop is not None:
            return await self.stop(job.job_id, stop)
        return None

    async def stop(self, job_id: str, graceful: bool) -> Event:
        await self.runner.stop(job_id, self.kill_grace, graceful=graceful)
        # The runner reports RunStopped itself; this covers a run it no longer knew (the core ignores repeats).
        return RunStopped(job_id)

    async def shutdown(self) -> None:
        await self.runner.shutdown(grace_seconds=self.kill_grace)

    async def detach(self, grace_seconds: float) -> list[str]:
        """Let go of detached runs (they keep running; a restarted worker adopts them); stop the others."""
        return await self.runner.detach(grace_seconds)
