"""The runner's per-run state: the subprocess protocol that reports exit, the run record, a prepared launch."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import attrs

from fsm_worker.jobs.launch import SideChannel
from fsm_worker.jobs.parsers import OutputParser
from fsm_worker.jobs.progress import ErrorLine, RateLimiter, ResultLine
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.protocol.worker.events import RunEvent, RunProgress, TerminalEvent
from fsm_worker.shells.runner.detached import RunFiles, RunRecord
from fsm_worker.shells.runner.output import OutputState
from fsm_worker.shells.runner.procgroup import RunScope

EventSink = Callable[[RunEvent], Awaitable[None] | None]


class ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
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
class Run:
    spec: JobSpec
    sink: EventSink
    timeout: float | None
    limiter: RateLimiter[RunProgress]
    proc: asyncio.subprocess.Process | None = None  # a run that dies with the worker: piped output
    wrapper: subprocess.Popen[bytes] | None = None  # a detached run's wrapper, our plain child (wait_child)
    transport: asyncio.SubprocessTransport | None = None
    protocol: ExitProtocol | None = None
    scope: RunScope | None = None
    token: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    started_at: float = 0.0
    started: asyncio.Event = attrs.field(factory=asyncio.Event)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)
    stop_requested: bool = False
    stop_grace: float = 0.0
    stop_early_requested: bool = False
    soft_stop_signal: int = signal.SIGINT
    channel: SideChannel | None = None
    channel_live: bool = False
    output: OutputState | None = None
    timed_out: bool = False
    termination: asyncio.Task[None] | None = None
    supervisor: asyncio.Task[None] | None = None
    last_progress: float = 0.0
    result: ResultLine | None = None
    error: ErrorLine | None = None
    terminal: TerminalEvent | None = None
    files: RunFiles | None = None  # detached runs: where output, record and exit status live
    record: RunRecord | None = None  # adopted runs: the processes found again
    exited: asyncio.Future[None] | None = None  # detached runs: the wrapper has ended
    adopted: bool = False
    detaching: bool = False  # the runner lets go of it: its processes are left running (`JobRunner.detach`)
    skip_until: int = 0  # adopted runs: progress from stdout lines ending at or before this offset was sent
    line_end: int = 0  # stdout offset after the line being handled
    offered_offset: int = 0  # stdout offset after the line of the last progress offered to the limiter
    resume_offset: int = 0  # stdout offset after the line of the last progress emitted


@attrs.frozen
class Prepared:
    argv: list[str]
    env: dict[str, str]
    parser: OutputParser
    soft_stop_signal: int
    channel: SideChannel | None
