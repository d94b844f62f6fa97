"""Taking back a detached run recorded in ``<workdir>/.run/``: its parser and side channel built anew, its
start time and exit from the record (``JobRunner.adopt`` drives these)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from fsm_worker.jobs.launch import Command, ReopenableChannel, SideChannel
from fsm_worker.jobs.parsers import JsonLines, OutputParser
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.shells.runner.detached import RunFiles, RunRecord, read_channel, wait_exit
from fsm_worker.shells.runner.procgroup import RunScope
from fsm_worker.shells.runner.run import Run

log = logging.getLogger(__name__)


def parser_of(registry: JobTypeRegistry, spec: JobSpec) -> tuple[OutputParser, int, SideChannel | None]:
    """Runs in a thread: the progress parser, soft-stop signal and side channel (not opened) of an adopted
    job, from its handler's launch built anew (JSON lines and no channel if it cannot be built any more)."""
    try:
        launch = registry.get(spec.job_type).build(spec)
    except Exception:
        log.warning("job %s: cannot rebuild its launch; reading JSON-lines progress", spec.job_id,
                    exc_info=True)  # fmt: skip
        return JsonLines(), signal.SIGINT, None
    if not isinstance(launch, Command):  # a PythonCall reports JSON lines
        return JsonLines(), signal.SIGINT, None
    parser = launch.progress if launch.progress is not None else JsonLines()
    return parser, launch.soft_stop_signal, launch.side_channel


async def reopened(job_id: str, files: RunFiles, channel: SideChannel | None) -> SideChannel | None:
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


def resume_clock(run: Run, record: RunRecord | None, *, alive: bool, limit: float | None) -> None:
    """Set an adopted run's scope, start time, remaining time limit and exit future from its record
    (the limit counts from the job's original start; an ended run's exit is already resolved)."""
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
