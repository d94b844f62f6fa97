"""Watching a started run until every process of its group is gone, and reaping it.

``supervise`` sends ``RunStarted`` (not for an adopted run), starts the output and side-channel readers,
enforces the run's time limit (SIGTERM, then SIGKILL after ``kill_grace``), kills what the main process left
behind, and ends the run with exactly one terminal event through ``finish``. Cancelling it (the runner lets
go of a detached run, or shuts down) kills the group unless the run is being detached.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from fsm_worker.jobs.spec import ErrorCode
from fsm_worker.protocol.worker.events import RunFailed, RunStarted, TerminalEvent
from fsm_worker.shells.runner import progress
from fsm_worker.shells.runner.detached import let_go, read_exit
from fsm_worker.shells.runner.joblog import read_log_tail
from fsm_worker.shells.runner.outcome import outcome, succeeded, tail
from fsm_worker.shells.runner.run import Run
from fsm_worker.shells.runner.tail import tail_stdout

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 2.0

Finish = Callable[[Run, TerminalEvent], Awaitable[None]]
Forget = Callable[[Run], None]


def begin_termination(run: Run, grace: float) -> None:
    """Start terminating the run's group (once): SIGTERM, SIGKILL after ``grace`` seconds."""
    if run.termination is None and run.scope is not None:
        run.termination = asyncio.create_task(run.scope.terminate(grace))


async def ask_to_stop_early(run: Run) -> None:
    """Ask the job to stop early and keep its outputs: its side channel, else its soft-stop signal."""
    handled = False
    if run.channel is not None:
        try:
            handled = await run.channel.stop_early()
        except Exception:
            log.warning("job %s: side channel stop failed", run.spec.job_id, exc_info=True)
    if not handled and run.scope is not None:
        run.scope.signal(signal.Signals(run.soft_stop_signal))


async def supervise(
    run: Run, *, kill_grace: float, stderr_tail_chars: int, finish: Finish, forget: Forget
) -> None:
    """Watch ``run`` to its end and ``finish`` it with its terminal event; ``forget`` it when cancelled."""
    scope, exited = run.scope, run.exited
    transport, protocol = run.transport, run.protocol
    if exited is None:
        assert protocol is not None
        exited = protocol.exited
    job_id = run.spec.job_id
    readers: list[asyncio.Task[None]] = []
    try:
        if not run.adopted:
            process = run.wrapper or run.proc
            assert process is not None
            await progress.emit(run, RunStarted(job_id, process.pid))
        run.started.set()
        if run.files is not None:
            readers.append(
                asyncio.create_task(
                    tail_stdout(run, run.files, exited, progress.on_parsed, progress.deliver_due)
                )
            )
        else:
            assert run.proc is not None and run.proc.stdout is not None and run.proc.stderr is not None
            readers += [
                asyncio.create_task(progress.read_stdout(run, run.proc.stdout)),
                asyncio.create_task(progress.read_stderr(run, run.proc.stderr)),
            ]
        if run.channel is not None:
            readers.append(asyncio.create_task(progress.read_channel(run, run.channel)))
        try:
            async with asyncio.timeout(run.timeout):
                await asyncio.shield(exited)
        except TimeoutError:
            if not run.stop_requested:
                run.timed_out = True
                begin_termination(run, kill_grace)
            await exited
        if run.termination is not None:
            await run.termination
        elif scope is not None:
            await scope.kill()  # whatever the finished main process left behind
        await progress.close_channel(run)  # lets its reader finish with what already arrived
        await drain(readers)
        if transport is not None:
            transport.close()
        terminal = await ended(run, stderr_tail_chars)
    except asyncio.CancelledError:
        if scope is not None and not run.detaching:
            scope.signal(signal.SIGKILL)
        for task in readers:
            task.cancel()
        if run.detaching and run.wrapper is not None:
            if run.exited is not None:
                run.exited.cancel()  # stop waiting for the wrapper: nothing else holds it (wait_child)
            let_go(run.wrapper)
        if transport is not None:
            transport.close()
        await progress.close_channel(run)
        forget(run)
        raise
    except Exception as exc:
        log.exception("job %s: supervisor failed", job_id)
        if scope is not None:
            await scope.kill()
        await drain(readers)
        if transport is not None:
            transport.close()
        await progress.close_channel(run)
        terminal = RunFailed(job_id, ErrorCode.HANDLER_ERROR, f"runner error: {exc!r}", False)
    finally:
        run.started.set()
    await progress.flush(run)
    await finish(run, terminal)


async def ended(run: Run, stderr_tail_chars: int) -> TerminalEvent:
    """The terminal event once every process is gone (a detached run's code comes from ``exit.json``)."""
    if run.files is None:
        assert run.transport is not None
        return await _outcome(run, run.transport.get_returncode())
    assert run.output is not None
    tail_bytes = stderr_tail_chars * 4
    run.output.stderr(await asyncio.to_thread(read_log_tail, run.files.stderr, tail_bytes))
    returncode = read_exit(run.files)
    if returncode is None and run.wrapper is not None:
        returncode = run.wrapper.returncode  # the wrapper itself was killed
    if returncode is None and not run.stop_requested and not run.timed_out:
        message = f"job lost: its wrapper ended without an exit status in {run.files.directory}"
        return RunFailed(run.spec.job_id, ErrorCode.LOST, message + tail(run), True)
    return await _outcome(run, returncode)


async def drain(readers: list[asyncio.Task[None]]) -> None:
    """Let the readers hit EOF; a descendant that escaped the group could hold a pipe open."""
    _, pending = await asyncio.wait(readers, timeout=DRAIN_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _outcome(run: Run, returncode: int | None) -> TerminalEvent:
    ended_well = returncode == 0 or (run.stop_early_requested and run.error is None)
    if ended_well and not run.stop_requested and not run.timed_out:
        return await asyncio.to_thread(succeeded, run, time.monotonic())
    return outcome(run, returncode)
