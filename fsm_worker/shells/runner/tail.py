"""Following a detached run's output: ``stdout.log`` read across rotations, cut into lines at exact logical
offsets and handed to the run's parser one line at a time (``run.line_end`` is the resume offset's source).

Also the fresh run directory a detached launch starts from. The runner drives these (``watch.py``, ``spawn.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from fsm_worker.jobs.parsers import ParsedLine
from fsm_worker.jobs.progress import ProgressLine
from fsm_worker.shells.runner.detached import TAIL_POLL, RunFiles, write_json_atomically
from fsm_worker.shells.runner.joblog import LogReader, fresh_log
from fsm_worker.shells.runner.output import LINE_LIMIT
from fsm_worker.shells.runner.run import Run

log = logging.getLogger(__name__)

READ_CHUNK = 65536

OnParsed = Callable[[Run, ParsedLine], Awaitable[None]]
DeliverDue = Callable[[Run], Awaitable[None]]


async def tail_stdout(
    run: Run, files: RunFiles, exited: asyncio.Future[None], on_parsed: OnParsed, deliver_due: DeliverDue
) -> None:
    """Follow ``stdout.log`` from its earliest kept byte until the run has exited and it is read to its end.

    Offsets are logical (bytes the job ever wrote: the log rotates, ``joblog.py``). Lines are handled one
    by one so that ``run.line_end`` is exact; progress from lines that end at or before ``run.skip_until``
    was already sent before an adoption and only updates the run's state. Where bytes were rotated away
    unread, the partial line after them is dropped.
    """
    assert run.output is not None
    pending = bytearray()
    reader = LogReader(files.stdout)
    if not await asyncio.to_thread(reader.open):  # removed while no runner watched: nothing to parse
        log.warning("job %s: %s is missing", run.spec.job_id, files.stdout)
        await exited
        return
    try:
        fragment = False
        while True:
            finished = exited.done()
            data = await asyncio.to_thread(reader.read, READ_CHUNK)
            if reader.take_gap():
                pending.clear()
                fragment = True
                run.line_end = reader.position - len(data)
            if data:
                pending += data
                if fragment:
                    fragment = _drop_fragment(run, pending)
                await _stdout_lines(run, pending, on_parsed, final=False)
                continue
            if finished:
                await _stdout_lines(run, pending, on_parsed, final=True)
                return
            await deliver_due(run)
            await asyncio.wait([exited], timeout=TAIL_POLL)
    finally:
        reader.close()


def _drop_fragment(run: Run, pending: bytearray) -> bool:
    """Drop the tail of a line whose start was rotated away; True while its end has not arrived yet."""
    cut = line_end(pending)
    if cut is None:
        run.line_end += len(pending)
        pending.clear()
        return True
    run.line_end += cut
    del pending[:cut]
    return False


async def _stdout_lines(run: Run, pending: bytearray, on_parsed: OnParsed, *, final: bool) -> None:
    assert run.output is not None
    while pending:
        cut = line_end(pending)
        if cut is None:
            if not final and len(pending) <= LINE_LIMIT:
                return
            cut = len(pending)
        line, run.line_end = bytes(pending[:cut]), run.line_end + cut
        del pending[:cut]
        items = run.output.stdout(line) + run.output.stdout(b"")
        for item in items:
            if isinstance(item, ProgressLine) and run.channel_live:
                continue
            if isinstance(item, ProgressLine) and run.line_end <= run.skip_until:
                run.last_progress = max(run.last_progress, item.progress)
                continue
            await on_parsed(run, item)


def line_end(data: bytearray) -> int | None:
    """Offset just after the first line separator (``\\r\\n`` counts as one) in ``data``; None if none."""
    positions = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    if not positions:
        return None
    end = min(positions) + 1
    if data[end - 1 : end] == b"\r" and end < len(data) and data[end : end + 1] == b"\n":
        end += 1
    return end


def fresh_run_files(files: RunFiles, channel: dict[str, Any] | None) -> tuple[BinaryIO, BinaryIO]:
    """Runs in a thread: an empty run directory with empty job logs and the side channel's set-up (if it can
    be reopened); the wrapper's own log opened as its stdout and stderr."""
    files.directory.mkdir(parents=True, exist_ok=True)
    for path in (files.record, files.exit, files.channel):
        path.unlink(missing_ok=True)
    if channel is not None:
        write_json_atomically(files.channel, channel)
    for stream in (files.stdout, files.stderr):
        fresh_log(stream).close()
    wrapper_log = open(files.wrapper_log, "wb")  # noqa: SIM115  (closed once the wrapper started)
    return wrapper_log, wrapper_log
