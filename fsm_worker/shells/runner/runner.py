"""Run jobs as supervised subprocesses and report ``RunEvent``s.

Each run gets its own process group (``start_new_session``) with unbuffered output. Stdout carries the
JSON-lines progress channel (``docs/job-progress.md``); stderr is kept as a bounded tail for failure
messages. A run ends with exactly one terminal event, sent only after every process of its group is gone.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs

from fsm_worker.jobs.progress import ErrorLine, ProgressLine, RateLimiter, ResultLine, parse_line
from fsm_worker.jobs.registry import Command, JobTypeRegistry, Launch, PythonCall
from fsm_worker.jobs.spec import ErrorCode, JobInputInvalid, JobSpec
from fsm_worker.protocol.worker.events import (
    RunEvent,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    TerminalEvent,
)
from fsm_worker.shells.runner.procgroup import ENV_TAG, RunScope

log = logging.getLogger(__name__)

EventSink = Callable[[RunEvent], Awaitable[None] | None]

PROGRESS_EPSILON = 1e-3
LINE_LIMIT = 256 * 1024
DRAIN_TIMEOUT = 2.0


class JobAlreadyRunning(RuntimeError):
    """``start`` was called for a job id that is still running."""


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also signals the main process's exit.

    ``Process.wait()`` also waits for the pipes to close, which a descendant may hold open.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


@attrs.define(eq=False)
class _Run:
    spec: JobSpec
    sink: EventSink
    timeout: float | None
    limiter: RateLimiter[RunProgress]
    proc: asyncio.subprocess.Process | None = None
    transport: asyncio.SubprocessTransport | None = None
    protocol: _Protocol | None = None
    scope: RunScope | None = None
    token: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    started_at: float = 0.0
    started: asyncio.Event = attrs.field(factory=asyncio.Event)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)
    stop_requested: bool = False
    stop_grace: float = 0.0
    timed_out: bool = False
    termination: asyncio.Task[None] | None = None
    supervisor: asyncio.Task[None] | None = None
    last_progress: float = 0.0
    result: ResultLine | None = None
    error: ErrorLine | None = None
    stderr_tail: bytearray = attrs.field(factory=bytearray)
    terminal: TerminalEvent | None = None


class JobRunner:
    """Starts, supervises and stops job processes; one instance per worker.

    ``timeout`` is the default per-run limit in seconds (``None``: unlimited); ``kill_grace`` is the
    SIGTERM→SIGKILL grace used on timeout and by ``shutdown``; ``progress_interval`` bounds the rate of
    ``RunProgress`` events per run; ``python`` runs ``PythonCall`` launches.
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
    ) -> None:
        self.registry = registry
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.progress_interval = progress_interval
        self.stderr_tail_chars = stderr_tail_chars
        self.python = python
        self._runs: dict[str, _Run] = {}
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
        run = _Run(spec, on_event, timeout if timeout is not None else self.timeout,
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

    async def _launch(self, run: _Run) -> None:
        spec = run.spec
        try:
            argv, env = await asyncio.to_thread(self._prepare, spec)
            env[ENV_TAG] = run.token
        except JobInputInvalid as exc:
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.INPUT_INVALID, str(exc), False))
            return
        except Exception as exc:
            log.exception("job %s: handler for %r failed", spec.job_id, spec.job_type)
            message = f"handler error: {type(exc).__name__}: {exc}"
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.HANDLER_ERROR, message, False))
            return
        if run.stop_requested:
            await self._finish(run, RunStopped(spec.job_id))
            return
        loop = asyncio.get_running_loop()
        try:
            run.transport, run.protocol = await loop.subprocess_exec(
                lambda: _Protocol(LINE_LIMIT, loop),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=spec.workdir,
                env=env,
                start_new_session=True,
            )
            run.proc = asyncio.subprocess.Process(run.transport, run.protocol, loop)
            run.scope = RunScope(run.proc.pid, run.token)
        except OSError as exc:
            message = f"cannot start {argv[0]!r}: {exc}"
            await self._finish(run, RunFailed(spec.job_id, ErrorCode.HANDLER_ERROR, message, False))
            return
        run.started_at = time.monotonic()
        if run.stop_requested:
            self._begin_termination(run, run.stop_grace)
        run.supervisor = asyncio.create_task(self._supervise(run), name=f"job-{spec.job_id}")

    async def stop(self, job_id: str, grace_seconds: float | None = None, *, graceful: bool = False) -> bool:
        """SIGTERM the run's process group, SIGKILL it after the grace period, wait until all are gone.

        Returns True if the run ended with ``RunStopped``; False if it was unknown or already ending.
        ``graceful`` (a client's soft stop) asks the job to wrap up and keep its outputs; until the jobs side
        defines how a job hears that, it stops the run as above.
        """
        run = self._runs.get(job_id)
        if run is None:
            return False
        if run.terminal is None and not run.stop_requested:
            run.stop_requested = True
            run.stop_grace = self.kill_grace if grace_seconds is None else grace_seconds
            if run.proc is not None:
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

    # -- internals -------------------------------------------------------------------------------------

    def _prepare(self, spec: JobSpec) -> tuple[list[str], dict[str, str]]:
        """Runs in a thread: validate, let the handler check inputs and build, create ``outputs/``."""
        handler = self.registry.get(spec.job_type)
        handler.validate_config(spec.config)
        launch = handler.build(spec)
        if not isinstance(launch, Command | PythonCall):
            raise TypeError(f"build() returned {type(launch).__name__}, not Command or PythonCall")
        spec.outputs_dir.mkdir(parents=True, exist_ok=True)
        return self._command(launch)

    def _command(self, launch: Launch) -> tuple[list[str], dict[str, str]]:
        if isinstance(launch, PythonCall):
            kwargs = json.dumps(dict(launch.kwargs))
            launch = Command((self.python, "-u", "-m", "fsm_worker.jobs.pycall", launch.target, kwargs),
                             launch.env)  # fmt: skip
        env = dict(os.environ) if launch.inherit_env else {}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(launch.env)
        executable = launch.argv[0]
        if shutil.which(executable, path=env.get("PATH")) is None:
            raise FileNotFoundError(f"cannot start {executable!r}: no such executable")
        guard = [
            self.python,
            "-m",
            "fsm_worker.shells.runner.guard",
            str(os.getpid()),
            "--",
        ]  # dies with the worker
        return [*guard, *launch.argv], env

    def _begin_termination(self, run: _Run, grace: float) -> None:
        if run.termination is None and run.scope is not None:
            run.termination = asyncio.create_task(run.scope.terminate(grace))

    async def _supervise(self, run: _Run) -> None:
        proc, transport, protocol, scope = run.proc, run.transport, run.protocol, run.scope
        assert proc is not None and transport is not None and protocol is not None and scope is not None
        job_id = run.spec.job_id
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        readers: list[asyncio.Task[None]] = []
        try:
            await self._emit(run, RunStarted(job_id, proc.pid))
            run.started.set()
            readers += [
                asyncio.create_task(self._read_stdout(run, stdout)),
                asyncio.create_task(self._read_stderr(run, stderr)),
            ]
            try:
                async with asyncio.timeout(run.timeout):
                    await asyncio.shield(protocol.exited)
            except TimeoutError:
                if not run.stop_requested:
                    run.timed_out = True
                    self._begin_termination(run, self.kill_grace)
                await protocol.exited
            if run.termination is not None:
                await run.termination
            else:
                await scope.kill()  # whatever the finished main process left behind
            await self._drain(readers)
            transport.close()
            terminal = await self._outcome(run, transport.get_returncode())
        except asyncio.CancelledError:
            scope.signal(signal.SIGKILL)
            for task in readers:
                task.cancel()
            transport.close()
            self._runs.pop(job_id, None)
            run.done.set()
            raise
        except Exception as exc:
            log.exception("job %s: supervisor failed", job_id)
            await scope.kill()
            await self._drain(readers)
            transport.close()
            terminal = RunFailed(job_id, ErrorCode.HANDLER_ERROR, f"runner error: {exc!r}", False)
        finally:
            run.started.set()
        pending = run.limiter.flush()
        if pending is not None and not run.stop_requested:
            await self._emit(run, pending)
        await self._finish(run, terminal)

    async def _drain(self, readers: list[asyncio.Task[None]]) -> None:
        """Let the readers hit EOF; a descendant that escaped the group could hold a pipe open."""
        _, pending = await asyncio.wait(readers, timeout=DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _outcome(self, run: _Run, returncode: int | None) -> TerminalEvent:
        job_id = run.spec.job_id
        if run.stop_requested:
            return RunStopped(job_id)
        if run.timed_out:
            message = f"timed out after {run.timeout:g} s" + self._tail(run)
            return RunFailed(job_id, ErrorCode.TIMEOUT, message, True)
        if returncode == 0:
            return await asyncio.to_thread(self._success, run)
        if returncode is not None and returncode < 0:
            message = f"killed by {_signal_name(-returncode)}" + self._tail(run)
            return RunFailed(job_id, ErrorCode.KILLED, message, True)
        if run.error is not None and run.error.code == ErrorCode.INPUT_INVALID:
            return RunFailed(job_id, ErrorCode.INPUT_INVALID, run.error.message + self._tail(run), False)
        reported = f": {run.error.message}" if run.error is not None and run.error.message else ""
        message = f"exit code {returncode}{reported}" + self._tail(run)
        return RunFailed(job_id, ErrorCode.EXIT_NONZERO, message, False)

    def _success(self, run: _Run) -> RunSucceeded:
        outputs = run.spec.outputs_dir
        files = tuple(sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if _regular(p)))
        size_mb = None
        if run.result is not None and run.result.model_file:
            model = outputs / run.result.model_file
            if model.resolve().is_relative_to(outputs.resolve()) and _regular(model):
                size_mb = model.stat().st_size / 1_000_000
            else:
                log.warning("job %s: model file %r is not in outputs", run.spec.job_id, run.result.model_file)
        minutes = (time.monotonic() - run.started_at) / 60
        metrics = run.result.metrics if run.result is not None else {}
        return RunSucceeded(run.spec.job_id, minutes, size_mb, files, metrics)

    def _tail(self, run: _Run) -> str:
        if not run.stderr_tail:
            return ""
        text = run.stderr_tail.decode("utf-8", "replace").strip()[-self.stderr_tail_chars :]
        return f"\nstderr tail:\n{text}"

    async def _read_stdout(self, run: _Run, stream: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(run.limiter.deadline):
                    line = await stream.readline()
            except TimeoutError:
                due = run.limiter.due(loop.time())
                if due is not None and not run.stop_requested:
                    await self._emit(run, due)
                continue
            except ValueError:
                log.warning("job %s: stdout line longer than %d bytes skipped", run.spec.job_id, LINE_LIMIT)
                continue
            if not line:
                return
            progress = self._on_line(run, line)
            if progress is not None and not run.stop_requested:
                item = run.limiter.offer(progress, loop.time())
                if item is not None:
                    await self._emit(run, item)

    def _on_line(self, run: _Run, line: bytes) -> RunProgress | None:
        parsed = parse_line(line)
        if isinstance(parsed, ProgressLine):
            value = min(max(parsed.progress, PROGRESS_EPSILON), 1 - PROGRESS_EPSILON)
            run.last_progress = max(run.last_progress, value)
            return RunProgress(run.spec.job_id, run.last_progress, parsed.message, parsed.metrics)
        if isinstance(parsed, ResultLine):
            run.result = parsed
        elif isinstance(parsed, ErrorLine):
            run.error = parsed
        else:
            log.info("job %s: %s", run.spec.job_id, line.decode("utf-8", "replace").rstrip())
        return None

    async def _read_stderr(self, run: _Run, stream: asyncio.StreamReader) -> None:
        limit = self.stderr_tail_chars * 4  # utf-8 worst case
        while chunk := await stream.read(65536):
            log.debug("job %s stderr: %s", run.spec.job_id, chunk.decode("utf-8", "replace").rstrip())
            run.stderr_tail += chunk
            del run.stderr_tail[:-limit]

    async def _emit(self, run: _Run, event: RunEvent) -> None:
        try:
            result = run.sink(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("job %s: event sink failed on %s", run.spec.job_id, type(event).__name__)

    async def _finish(self, run: _Run, terminal: TerminalEvent) -> None:
        run.terminal = terminal
        try:
            await self._emit(run, terminal)
        finally:
            self._runs.pop(run.spec.job_id, None)
            run.started.set()
            run.done.set()


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
