"""A run's progress channel: piped stdout/stderr and the side channel read into ``RunProgress`` events.

Parsed lines become rate-limited ``RunProgress`` events (``run.limiter``); a result or error line is kept on
the run for its terminal event. Every event goes to the run's sink through ``emit``, which never raises.
A detached run's stdout is followed from its log instead (``tail.py``), through the same ``on_parsed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging

from fsm_worker.jobs.launch import SideChannel
from fsm_worker.jobs.parsers import ParsedLine
from fsm_worker.jobs.progress import ErrorLine, ProgressLine, ResultLine
from fsm_worker.protocol.worker.events import RunEvent, RunProgress
from fsm_worker.shells.runner.run import Run

log = logging.getLogger(__name__)

PROGRESS_EPSILON = 1e-3
READ_CHUNK = 65536


async def emit(run: Run, event: RunEvent) -> None:
    """Hand ``event`` to the run's sink (plain or async); a failing sink is logged, never raised."""
    try:
        result = run.sink(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("job %s: event sink failed on %s", run.spec.job_id, type(event).__name__)


async def on_parsed(run: Run, parsed: ParsedLine) -> None:
    """Keep a result or error line; offer progress (clamped inside (0, 1), never going back) to the limiter."""
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
            await emit(run, item)


async def deliver_due(run: Run) -> None:
    """Send the progress the limiter held back, once its interval has passed."""
    due = run.limiter.due(asyncio.get_running_loop().time())
    if due is not None and not run.stop_requested:
        run.resume_offset = run.offered_offset
        await emit(run, due)


async def flush(run: Run) -> None:
    """Send the last held-back progress before the terminal event (not after a stop)."""
    pending = run.limiter.flush()
    if pending is not None and not run.stop_requested:
        run.resume_offset = run.offered_offset
        await emit(run, pending)


async def read_stdout(run: Run, stream: asyncio.StreamReader) -> None:
    """A piped run's stdout through its parser until EOF, delivering held-back progress on time."""
    assert run.output is not None
    while True:
        try:
            async with asyncio.timeout_at(run.limiter.deadline):
                data = await stream.read(READ_CHUNK)
        except TimeoutError:
            await deliver_due(run)
            continue
        for item in run.output.stdout(data):
            if isinstance(item, ProgressLine) and run.channel_live:
                continue  # the side channel reports progress; the bar on stdout is only its fallback
            await on_parsed(run, item)
        if not data:
            return


async def read_stderr(run: Run, stream: asyncio.StreamReader) -> None:
    """A piped run's stderr into its bounded tail."""
    assert run.output is not None
    while chunk := await stream.read(READ_CHUNK):
        run.output.stderr(chunk)


async def read_channel(run: Run, channel: SideChannel) -> None:
    """The side channel's events; once it reports progress, stdout's progress is ignored."""
    async for item in channel.events():
        if isinstance(item, ProgressLine):
            run.channel_live = True
        await on_parsed(run, item)


async def open_channel(job_id: str, channel: SideChannel | None) -> SideChannel | None:
    """The side channel opened, or None (none, or it failed to open: progress then comes from output only)."""
    if channel is None:
        return None
    try:
        await channel.open()
    except Exception:
        log.warning("job %s: side channel could not open; progress from output only", job_id, exc_info=True)
        return None
    return channel


async def close_channel(run: Run) -> None:
    """Close and forget the run's side channel (errors ignored)."""
    channel, run.channel = run.channel, None
    if channel is not None:
        with contextlib.suppress(Exception):
            await channel.close()
