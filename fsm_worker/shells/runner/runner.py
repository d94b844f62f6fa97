"""Run jobs as supervised subprocesses and report ``RunEvent``s: the runner's public face.

Each run gets its own process group (``start_new_session``) with unbuffered output and an allow-listed
environment (``spawn.py``, ``environment.py``). Stdout is read through the launch's parser (default: the
JSON-lines progress channel, ``docs/job-progress.md``); a launch's side channel (sleap-nn's ZMQ sockets) may
report progress too and handle a graceful stop (``progress.py``). Plain output and stderr are kept as bounded
tails for failure messages. A run ends with exactly one terminal event, sent only after every process of its
group is gone (``watch.py``). A detached run is taken back after a restart by ``adopt`` (``adopt.py``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import time
from collections.abc import Iterable
from typing import Literal

from fsm_worker.jobs.progress import RateLimiter
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import ErrorCode, JobInputInvalid, JobSpec, JobTypeError
from fsm_worker.protocol.worker.events import RunFailed, RunStopped, TerminalEvent
from fsm_worker.shells.runner import adopt as adoption
from fsm_worker.shells.runner import progress, watch
from fsm_worker.shells.runner.detached import RunFiles, RunRecord, read_exit
from fsm_worker.shells.runner.environment import DEFAULT_ALLOW
from fsm_worker.shells.runner.joblog import DEFAULT_MAX_BYTES, MIN_MAX_BYTES
from fsm_worker.shells.runner.output import OutputState
from fsm_worker.shells.runner.procgroup import ENV_TAG
from fsm_worker.shells.runner.run import EventSink, Run
from fsm_worker.shells.runner.spawn import SpawnFailed, prepare, spawn

log = logging.getLogger(__name__)


JobLifetime = Literal["detached", "with_worker"]


class JobAlreadyRunning(RuntimeError):
    """``start`` was called for a job id that is still running."""


class Adoption(enum.Enum):
    """What ``JobRunner.adopt`` found for a recorded job."""

    RUNNING = "running"  # still running: supervised again, events follow as for a started run
    ENDED = "ended"  # it ended while no runner watched it: its real terminal event was delivered
    LOST = "lost"  # neither a live process nor an exit status: ``RunFailed(LOST)`` was delivered


class JobRunner:
    """Starts, supervises and stops job processes; one instance per worker.

    ``timeout`` is the default per-run limit in seconds (``None``: unlimited); ``kill_grace`` is the
    SIGTERM→SIGKILL grace used on timeout and by ``shutdown``; ``progress_interval`` bounds the rate of
    ``RunProgress`` events per run; ``python`` runs ``PythonCall`` launches; ``env_allow`` lists the worker
    variables (names or ``PREFIX*``) a job may see; ``soft_stop_timeout`` bounds a graceful stop before
    it becomes a plain stop. ``job_lifetime``: ``"detached"`` (default) runs every job in its own session
    through a wrapper that records it in ``<workdir>/.run/`` so that it outlives the worker and ``adopt``
    finds it again; ``"with_worker"`` runs it under a ``PR_SET_PDEATHSIG`` guard with piped output, so it
    dies with the worker. ``log_max_bytes`` bounds a detached job's ``stdout.log`` and ``stderr.log`` each (they
    rotate to one ``.1`` file: at most twice that on disk per stream; ``joblog.py``).
    """

    def __init__(
        self,
        registry: JobTypeRegistry,
        *,
        timeout: float | None = None,
        kill_grace: float = 5.0,
        progress_interval: float = 0.25,
        stderr_tail_chars: int = 2000,
        python: str = sys.executable,
        env_allow: Iterable[str] = DEFAULT_ALLOW,
        soft_stop_timeout: float = 120.0,
        job_lifetime: JobLifetime = "detached",
        log_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if job_lifetime not in ("detached", "with_worker"):
            raise ValueError(f"job_lifetime must be 'detached' or 'with_worker', not {job_lifetime!r}")
        if log_max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"job_log_max_bytes must be at least {MIN_MAX_BYTES}, got {log_max_bytes}")
        self.log_max_bytes = log_max_bytes
        self.job_lifetime = job_lifetime
        self.registry = registry
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.progress_interval = progress_interval
        self.stderr_tail_chars = stderr_tail_chars
        self.python = python
        self.env_allow = tuple(env_allow)
        self.soft_stop_timeout = soft_stop_timeout
        self._runs: dict[str, Run] = {}
        self._closed = False

    @property
    def running(self) -> list[str]:
        """Job ids whose run has not yet reported its terminal event."""
        return list(self._runs)

    async def start(self, spec: JobSpec, on_event: EventSink, *, timeout: float | None = None) -> None:
        """Validate, build and launch ``spec``; return once ``RunStarted`` (or the failure) is delivered.

        ``on_event`` may be a plain or an async function; events of one run are delivered in order, so
        it must not await ``stop``/``wait`` of the same run (schedule a task instead). Handler errors
        become ``RunFailed`` events; only a duplicate job id or a closed runner raise.
        """
        if self._closed:
            raise RuntimeError("job runner is shut down")
        if spec.job_id in self._runs:
            raise JobAlreadyRunning(spec.job_id)
        run = Run(spec, on_event, timeout if timeout is not None else self.timeout,
                   RateLimiter(self.progress_interval))  # fmt: skip
        self._runs[spec.job_id] = run
        try:
            await self._launch(run)
        except BaseException:
            if run.proc is None and run.wrapper is None and not run.done.is_set():  # before a process existed
                self._runs.pop(spec.job_id, None)
                run.done.set()
            raise
        await run.started.wait()

    async def adopt(
        self, spec: JobSpec, on_event: EventSink, *, offset: int = 0, timeout: float | None = None
    ) -> Adoption:
        """Take back a detached job recorded in ``spec.workdir/.run/`` (e.g. after a worker restart).

        ``offset`` is the ``resume_offset`` journaled with the last progress event sent: progress from
        stdout lines up to it is not sent again, everything after it is. A job whose wrapper still runs
        (pid and start time match the record) is supervised as if ``start`` had launched it, without a
        second ``RunStarted``: progress, ``stop`` (graceful or not) and ``wait`` work by job id, and it ends
        with the same terminal events; returns ``RUNNING``. A job that ended meanwhile gets its real
        terminal event from its exit status (outputs listed as usual) before this returns ``ENDED``. With
        neither, ``RunFailed(LOST)`` is delivered and this returns ``LOST``. ``timeout`` (default: the
        runner's) counts from the job's original start. Raises only for a duplicate job id or a closed runner.
        """
        if self._closed:
            raise RuntimeError("job runner is shut down")
        if spec.job_id in self._runs:
            raise JobAlreadyRunning(spec.job_id)
        files = RunFiles.of_workdir(spec.workdir)
        record = RunRecord.read(files)
        ended = read_exit(files) is not None
        alive = not ended and record is not None and record.wrapper_alive()
        limit = timeout if timeout is not None else self.timeout
        run = Run(spec, on_event, limit, RateLimiter(self.progress_interval))
        run.adopted, run.files, run.record = True, files, record
        run.skip_until = run.resume_offset = run.offered_offset = max(0, offset)
        self._runs[spec.job_id] = run
        if not alive and not ended:
            what = "no record" if record is None else f"wrapper pid {record.wrapper_pid} is gone"
            message = f"job lost: {what} and no exit status in {files.directory}"
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.LOST, message, True))
            return Adoption.LOST
        parser, run.soft_stop_signal, channel = await asyncio.to_thread(
            adoption.parser_of, self.registry, spec
        )
        run.output = OutputState(spec.job_id, parser, self.stderr_tail_chars)
        if alive:
            run.channel = await progress.open_channel(
                spec.job_id, await adoption.reopened(spec.job_id, files, channel)
            )
        adoption.resume_clock(run, record, alive=alive, limit=limit)
        run.started.set()
        self._watch(run)
        if not alive:
            await run.done.wait()
            return Adoption.ENDED
        return Adoption.RUNNING

    def resume_offset(self, job_id: str) -> int | None:
        """Stdout offset after the line of the last progress event sent (None: unknown or not detached).

        Read it in the event sink when a ``RunProgress`` arrives and journal it with that event; give it
        to ``adopt`` after a restart so that no progress event is lost or repeated.
        """
        run = self._runs.get(job_id)
        if run is None or run.files is None:
            return None
        return run.resume_offset

    async def _launch(self, run: Run) -> None:
        spec = run.spec
        try:
            prepared = await asyncio.to_thread(
                prepare, self.registry, spec, python=self.python, env_allow=self.env_allow,
                detached=self.job_lifetime == "detached",
            )  # fmt: skip
        except JobInputInvalid as exc:
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.INPUT_INVALID, str(exc), False))
            return
        except JobTypeError as exc:
            await self._finish(run, RunFailed(spec.job_id, exc.code, str(exc), exc.recoverable))
            return
        except Exception as exc:
            log.exception("job %s: handler for %r failed", spec.job_id, spec.job_type)
            message = f"handler error: {type(exc).__name__}: {exc}"
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.HANDLER_ERROR, message, False))
            return
        argv, env = prepared.argv, prepared.env
        env[ENV_TAG] = run.token
        run.output = OutputState(spec.job_id, prepared.parser, self.stderr_tail_chars)
        run.soft_stop_signal = prepared.soft_stop_signal
        if run.stop_requested:
            await self._finish(run, RunStopped(spec.job_id))
            return
        run.channel = await progress.open_channel(spec.job_id, prepared.channel)
        try:
            await spawn(run, argv, env, python=self.python, log_max_bytes=self.log_max_bytes,
                        detached=self.job_lifetime == "detached")  # fmt: skip
        except SpawnFailed as exc:
            await progress.close_channel(run)
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.HANDLER_ERROR, str(exc), False))
            return
        run.started_at = time.monotonic()
        if run.stop_requested:
            watch.begin_termination(run, run.stop_grace)
        elif run.stop_early_requested:
            await watch.ask_to_stop_early(run)
        self._watch(run)

    async def stop(self, job_id: str, grace_seconds: float | None = None, *, graceful: bool = False) -> bool:
        """SIGTERM the run's process group, SIGKILL it after the grace period, wait until all are gone.

        ``graceful=True`` asks the job to stop early and keep its outputs instead (the launch's side channel,
        else ``soft_stop_signal`` to the group); the run then ends as it would on its own and a success is
        marked ``stopped_early``. A job still running ``soft_stop_timeout`` seconds later gets a plain stop.

        Returns True if the run ended with ``RunStopped`` (or, graceful, with any terminal event); False if
        it was unknown or already ending.
        """
        run = self._runs.get(job_id)
        if run is None:
            return False
        if graceful:
            if run.terminal is None and not run.stop_requested and not run.stop_early_requested:
                run.stop_early_requested = True
                if run.scope is not None:
                    await watch.ask_to_stop_early(run)
            try:
                async with asyncio.timeout(self.soft_stop_timeout):
                    await run.done.wait()
            except TimeoutError:
                log.warning(
                    "job %s: still running %g s after a graceful stop", job_id, self.soft_stop_timeout
                )
                return await self.stop(job_id, grace_seconds)
            return run.terminal is not None
        if run.terminal is None and not run.stop_requested:
            run.stop_requested = True
            run.stop_grace = self.kill_grace if grace_seconds is None else grace_seconds
            if run.scope is not None:
                watch.begin_termination(run, run.stop_grace)
        await run.done.wait()
        return isinstance(run.terminal, RunStopped)

    async def wait(self, job_id: str) -> TerminalEvent | None:
        """Wait for the run's terminal event (``None`` if the job id is unknown)."""
        run = self._runs.get(job_id)
        if run is None:
            return None
        await run.done.wait()
        return run.terminal

    async def shutdown(self, grace_seconds: float | None = None) -> None:
        """Refuse new runs and stop every running one."""
        self._closed = True
        await asyncio.gather(*(self.stop(job_id, grace_seconds) for job_id in list(self._runs)))

    async def detach(self, grace_seconds: float | None = None) -> list[str]:
        """Refuse new runs and let go of the detached ones: no signal, they keep running (a worker started
        again adopts them); runs under ``with_worker`` are stopped as by ``shutdown``. Returns the job ids
        left running."""
        self._closed = True
        left: list[str] = []
        supervisors: list[asyncio.Task[None]] = []
        for job_id, run in list(self._runs.items()):
            if run.files is None or run.supervisor is None:
                continue
            run.detaching = True
            run.supervisor.cancel()
            supervisors.append(run.supervisor)
            left.append(job_id)
        await asyncio.gather(*supervisors, return_exceptions=True)
        await self.shutdown(grace_seconds)  # what is left: piped runs, or one still being launched
        return left

    # -- internals -------------------------------------------------------------------------------------

    def _watch(self, run: Run) -> None:
        """Supervise a started (or adopted) run in its own task until its terminal event."""
        supervising = watch.supervise(run, kill_grace=self.kill_grace, stderr_tail_chars=self.stderr_tail_chars,
                                      finish=self._finish, forget=self._forget)  # fmt: skip
        run.supervisor = asyncio.create_task(supervising, name=f"job-{run.spec.job_id}")

    def _forget(self, run: Run) -> None:
        self._runs.pop(run.spec.job_id, None)
        run.done.set()

    async def _finish(self, run: Run, terminal: TerminalEvent) -> None:
        run.terminal = terminal
        try:
            await progress.emit(run, terminal)
        finally:
            self._runs.pop(run.spec.job_id, None)
            run.started.set()
            run.done.set()
