"""Run jobs as supervised subprocesses and report ``RunEvent``s.

Each run gets its own process group (``start_new_session``) with unbuffered output and an allow-listed
environment (``environment.py``). Stdout is read through the launch's parser (default: the JSON-lines
progress channel, ``docs/job-progress.md``); a launch's side channel (sleap-nn's ZMQ sockets) may report
progress too and handle a graceful stop. Plain output and stderr are kept as bounded tails for failure
messages. A run ends with exactly one terminal event, sent only after every process of its group is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from typing import BinaryIO, Literal

from fsm_worker.jobs.launch import Command, Launch, PythonCall, ReopenableChannel, SideChannel
from fsm_worker.jobs.parsers import JsonLines, OutputParser, ParsedLine
from fsm_worker.jobs.progress import ErrorLine, ProgressLine, RateLimiter, ResultLine
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import ErrorCode, JobInputInvalid, JobSpec, JobTypeError
from fsm_worker.protocol.worker.events import (
    RunEvent,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    TerminalEvent,
)
from fsm_worker.shells.runner.detached import (
    RunFiles,
    RunRecord,
    read_channel,
    read_exit,
    wait_exit,
)
from fsm_worker.shells.runner.environment import DEFAULT_ALLOW, job_environment
from fsm_worker.shells.runner.joblog import (
    DEFAULT_MAX_BYTES,
    MIN_MAX_BYTES,
    read_log_tail,
)
from fsm_worker.shells.runner.outcome import outcome, succeeded, tail
from fsm_worker.shells.runner.output import LINE_LIMIT, OutputState
from fsm_worker.shells.runner.procgroup import ENV_TAG, RunScope
from fsm_worker.shells.runner.run import EventSink, ExitProtocol, Prepared, Run
from fsm_worker.shells.runner.tail import fresh_run_files, tail_stdout

log = logging.getLogger(__name__)


PROGRESS_EPSILON = 1e-3
DRAIN_TIMEOUT = 2.0
READ_CHUNK = 65536


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
            if run.proc is None and not run.done.is_set():  # cancelled before a process existed
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
        parser, run.soft_stop_signal, channel = await asyncio.to_thread(self._parser_of, spec)
        run.output = OutputState(spec.job_id, parser, self.stderr_tail_chars)
        if alive:
            run.channel = await self._open_channel(
                spec.job_id, await self._reopened(spec.job_id, files, channel)
            )
        loop = asyncio.get_running_loop()
        if record is not None:
            if alive:  # an ended job's group id may belong to someone else by now
                run.scope = RunScope(record.pgid, record.token)
            run.started_at = time.monotonic() - max(0.0, time.time() - record.started_wall)
            if limit is not None:
                run.timeout = max(0.0, limit - (time.monotonic() - run.started_at))
        else:
            run.started_at = time.monotonic()
        if alive and record is not None:
            run.exited = asyncio.ensure_future(wait_exit(record))
        else:
            run.exited = loop.create_future()
            run.exited.set_result(None)
        run.started.set()
        run.supervisor = asyncio.create_task(self._supervise(run), name=f"job-{spec.job_id}")
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

    def _parser_of(self, spec: JobSpec) -> tuple[OutputParser, int, SideChannel | None]:
        """Runs in a thread: the progress parser, soft-stop signal and side channel (not opened) of an adopted
        job, from its handler's launch built anew (JSON lines and no channel if it cannot be built any more)."""
        try:
            launch = self.registry.get(spec.job_type).build(spec)
        except Exception:
            log.warning("job %s: cannot rebuild its launch; reading JSON-lines progress", spec.job_id,
                        exc_info=True)  # fmt: skip
            return JsonLines(), signal.SIGINT, None
        if not isinstance(launch, Command):  # a PythonCall reports JSON lines
            return JsonLines(), signal.SIGINT, None
        parser = launch.progress if launch.progress is not None else JsonLines()
        return parser, launch.soft_stop_signal, launch.side_channel

    async def _reopened(
        self, job_id: str, files: RunFiles, channel: SideChannel | None
    ) -> SideChannel | None:
        """An adopted job's side channel set up as its start recorded it (None: no channel, or no record of
        one, or the job type's channel cannot be reopened: progress then comes from its output only)."""
        if channel is None:
            return None
        saved = await asyncio.to_thread(read_channel, files)
        if saved is None or not isinstance(channel, ReopenableChannel):
            log.info("job %s: its side channel is not reopened; progress from output only", job_id)
            return None
        try:
            return channel.reopened(saved)
        except Exception:
            log.warning("job %s: side channel record %s unusable", job_id, saved, exc_info=True)
            return None

    async def _launch(self, run: Run) -> None:
        spec = run.spec
        try:
            prepared = await asyncio.to_thread(self._prepare, spec)
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
        run.channel = await self._open_channel(spec.job_id, prepared.channel)
        loop = asyncio.get_running_loop()
        stdout: BinaryIO | int
        stderr: BinaryIO | int
        try:
            if self.job_lifetime == "detached":
                run.files = RunFiles.of_workdir(spec.workdir)
                argv = [self.python, "-m", "fsm_worker.shells.runner.wrapper", str(run.files.directory),
                        "--log-max-bytes", str(self.log_max_bytes), "--", *argv]  # fmt: skip
                saved = run.channel.saved() if isinstance(run.channel, ReopenableChannel) else None
                stdout, stderr = await asyncio.to_thread(fresh_run_files, run.files, saved)
            else:
                stdout = stderr = asyncio.subprocess.PIPE
            try:
                run.transport, run.protocol = await loop.subprocess_exec(
                    lambda: ExitProtocol(LINE_LIMIT, loop),
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=spec.workdir,
                    env=env,
                    start_new_session=True,
                )
            finally:
                for handle in (stdout, stderr):
                    if not isinstance(handle, int):
                        handle.close()
            run.proc = asyncio.subprocess.Process(run.transport, run.protocol, loop)
            run.scope = RunScope(run.proc.pid, run.token)
            if run.files is not None:
                run.exited = run.protocol.exited
        except OSError as exc:
            await self._close_channel(run)
            message = f"cannot start {argv[0]!r}: {exc}"
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.HANDLER_ERROR, message, False))
            return
        run.started_at = time.monotonic()
        if run.stop_requested:
            self._begin_termination(run, run.stop_grace)
        elif run.stop_early_requested:
            await self._ask_to_stop_early(run)
        run.supervisor = asyncio.create_task(self._supervise(run), name=f"job-{spec.job_id}")

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
                    await self._ask_to_stop_early(run)
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
                self._begin_termination(run, run.stop_grace)
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

    def _prepare(self, spec: JobSpec) -> Prepared:
        """Runs in a thread: validate, let the handler check inputs and build, create ``outputs/``."""
        handler = self.registry.get(spec.job_type)
        handler.validate_config(spec.config)
        launch = handler.build(spec)
        if not isinstance(launch, Command | PythonCall):
            raise TypeError(f"build() returned {type(launch).__name__}, not Command or PythonCall")
        spec.outputs_dir.mkdir(parents=True, exist_ok=True)
        return self._command(launch, spec.cuda_visible_devices)

    def _command(self, launch: Launch, cuda_visible_devices: str | None = None) -> Prepared:
        if isinstance(launch, PythonCall):
            kwargs = json.dumps(dict(launch.kwargs))
            launch = Command((self.python, "-u", "-m", "fsm_worker.jobs.pycall", launch.target, kwargs),
                             launch.env, env_passthrough=launch.env_passthrough)  # fmt: skip
        slot = {} if cuda_visible_devices is None else {"CUDA_VISIBLE_DEVICES": cuda_visible_devices}
        env = job_environment(os.environ, allow=self.env_allow, passthrough=launch.env_passthrough,
                              extra={"PYTHONUNBUFFERED": "1", **launch.env, **slot},
                              inherit=launch.inherit_env)  # fmt: skip
        executable = launch.argv[0]
        if shutil.which(executable, path=env.get("PATH")) is None:
            raise FileNotFoundError(f"cannot start {executable!r}: no such executable")
        guard = (
            []
            if self.job_lifetime == "detached"
            else [
                self.python,
                "-m",
                "fsm_worker.shells.runner.guard",
                str(os.getpid()),
                "--",
            ]
        )  # dies with the worker; a detached job gets the wrapper in _launch
        parser = launch.progress if launch.progress is not None else JsonLines()
        return Prepared([*guard, *launch.argv], env, parser, launch.soft_stop_signal, launch.side_channel)

    async def _open_channel(self, job_id: str, channel: SideChannel | None) -> SideChannel | None:
        if channel is None:
            return None
        try:
            await channel.open()
        except Exception:
            log.warning(
                "job %s: side channel could not open; progress from output only", job_id, exc_info=True
            )
            return None
        return channel

    async def _ask_to_stop_early(self, run: Run) -> None:
        handled = False
        if run.channel is not None:
            try:
                handled = await run.channel.stop_early()
            except Exception:
                log.warning("job %s: side channel stop failed", run.spec.job_id, exc_info=True)
        if not handled and run.scope is not None:
            run.scope.signal(signal.Signals(run.soft_stop_signal))

    def _begin_termination(self, run: Run, grace: float) -> None:
        if run.termination is None and run.scope is not None:
            run.termination = asyncio.create_task(run.scope.terminate(grace))

    async def _supervise(self, run: Run) -> None:
        scope, exited = run.scope, run.exited
        transport, protocol = run.transport, run.protocol
        if exited is None:
            assert protocol is not None
            exited = protocol.exited
        job_id = run.spec.job_id
        readers: list[asyncio.Task[None]] = []
        try:
            if not run.adopted:
                assert run.proc is not None
                await self._emit(run, RunStarted(job_id, run.proc.pid))
            run.started.set()
            if run.files is not None:
                readers.append(
                    asyncio.create_task(
                        tail_stdout(run, run.files, exited, self._on_parsed, self._deliver_due)
                    )
                )
            else:
                assert run.proc is not None and run.proc.stdout is not None and run.proc.stderr is not None
                readers += [
                    asyncio.create_task(self._read_stdout(run, run.proc.stdout)),
                    asyncio.create_task(self._read_stderr(run, run.proc.stderr)),
                ]
            if run.channel is not None:
                readers.append(asyncio.create_task(self._read_channel(run, run.channel)))
            try:
                async with asyncio.timeout(run.timeout):
                    await asyncio.shield(exited)
            except TimeoutError:
                if not run.stop_requested:
                    run.timed_out = True
                    self._begin_termination(run, self.kill_grace)
                await exited
            if run.termination is not None:
                await run.termination
            elif scope is not None:
                await scope.kill()  # whatever the finished main process left behind
            await self._close_channel(run)  # lets its reader finish with what already arrived
            await self._drain(readers)
            if transport is not None:
                transport.close()
            terminal = await self._ended(run)
        except asyncio.CancelledError:
            if scope is not None and not run.detaching:
                scope.signal(signal.SIGKILL)
            for task in readers:
                task.cancel()
            if transport is not None and run.detaching:
                _let_go(transport)
            elif transport is not None:
                transport.close()
            await self._close_channel(run)
            self._runs.pop(job_id, None)
            run.done.set()
            raise
        except Exception as exc:
            log.exception("job %s: supervisor failed", job_id)
            if scope is not None:
                await scope.kill()
            await self._drain(readers)
            if transport is not None:
                transport.close()
            await self._close_channel(run)
            terminal = RunFailed(job_id, ErrorCode.HANDLER_ERROR, f"runner error: {exc!r}", False)
        finally:
            run.started.set()
        pending = run.limiter.flush()
        if pending is not None and not run.stop_requested:
            run.resume_offset = run.offered_offset
            await self._emit(run, pending)
        await self._finish(run, terminal)

    async def _ended(self, run: Run) -> TerminalEvent:
        """The terminal event once every process is gone (a detached run's code comes from ``exit.json``)."""
        if run.files is None:
            assert run.transport is not None
            return await self._outcome(run, run.transport.get_returncode())
        assert run.output is not None
        tail_bytes = self.stderr_tail_chars * 4
        run.output.stderr(await asyncio.to_thread(read_log_tail, run.files.stderr, tail_bytes))
        returncode = read_exit(run.files)
        if returncode is None and run.transport is not None:
            returncode = run.transport.get_returncode()  # the wrapper itself was killed
        if returncode is None and not run.stop_requested and not run.timed_out:
            message = f"job lost: its wrapper ended without an exit status in {run.files.directory}"
            return RunFailed(run.spec.job_id, ErrorCode.LOST, message + tail(run), True)
        return await self._outcome(run, returncode)

    async def _close_channel(self, run: Run) -> None:
        channel, run.channel = run.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _drain(self, readers: list[asyncio.Task[None]]) -> None:
        """Let the readers hit EOF; a descendant that escaped the group could hold a pipe open."""
        _, pending = await asyncio.wait(readers, timeout=DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _outcome(self, run: Run, returncode: int | None) -> TerminalEvent:
        ended_well = returncode == 0 or (run.stop_early_requested and run.error is None)
        if ended_well and not run.stop_requested and not run.timed_out:
            return await asyncio.to_thread(succeeded, run, time.monotonic())
        return outcome(run, returncode)

    async def _read_stdout(self, run: Run, stream: asyncio.StreamReader) -> None:
        assert run.output is not None
        while True:
            try:
                async with asyncio.timeout_at(run.limiter.deadline):
                    data = await stream.read(READ_CHUNK)
            except TimeoutError:
                await self._deliver_due(run)
                continue
            for item in run.output.stdout(data):
                if isinstance(item, ProgressLine) and run.channel_live:
                    continue  # the side channel reports progress; the bar on stdout is only its fallback
                await self._on_parsed(run, item)
            if not data:
                return

    async def _read_channel(self, run: Run, channel: SideChannel) -> None:
        async for item in channel.events():
            if isinstance(item, ProgressLine):
                run.channel_live = True
            await self._on_parsed(run, item)

    async def _deliver_due(self, run: Run) -> None:
        due = run.limiter.due(asyncio.get_running_loop().time())
        if due is not None and not run.stop_requested:
            run.resume_offset = run.offered_offset
            await self._emit(run, due)

    async def _on_parsed(self, run: Run, parsed: ParsedLine) -> None:
        if isinstance(parsed, ResultLine):
            run.result = parsed
            return
        if isinstance(parsed, ErrorLine):
            run.error = parsed
            return
        value = min(max(parsed.progress, PROGRESS_EPSILON), 1 - PROGRESS_EPSILON)
        run.last_progress = max(run.last_progress, value)
        progress = RunProgress(run.spec.job_id, run.last_progress, parsed.message, parsed.metrics)
        if not run.stop_requested:
            run.offered_offset = run.line_end
            item = run.limiter.offer(progress, asyncio.get_running_loop().time())
            if item is not None:
                run.resume_offset = run.offered_offset
                await self._emit(run, item)

    async def _read_stderr(self, run: Run, stream: asyncio.StreamReader) -> None:
        assert run.output is not None
        while chunk := await stream.read(READ_CHUNK):
            run.output.stderr(chunk)

    async def _emit(self, run: Run, event: RunEvent) -> None:
        try:
            result = run.sink(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("job %s: event sink failed on %s", run.spec.job_id, type(event).__name__)

    async def _finish(self, run: Run, terminal: TerminalEvent) -> None:
        run.terminal = terminal
        try:
            await self._emit(run, terminal)
        finally:
            self._runs.pop(run.spec.job_id, None)
            run.started.set()
            run.done.set()


def _let_go(transport: asyncio.SubprocessTransport) -> None:
    """Forget a detached run's wrapper without killing it. asyncio's `close()` (also called by the transport's
    `__del__`) kills a child that is still running; marking the transport closed leaves the process alone, so
    a graceful stop of the worker leaves the run going (its wrapper still records the exit status)."""
    setattr(transport, "_closed", True)  # noqa: B010  (asyncio offers no public way to let a child go)
