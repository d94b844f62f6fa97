"""Helpers for the job-execution tests: test-only job types, an event recorder, orphan checks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from fsm_worker.jobs import (
    TERMINAL_EVENTS,
    JobSpec,
    JobTypeRegistry,
    RunEvent,
    RunProgress,
    StaticCommandHandler,
    TerminalEvent,
    default_registry,
)

SCRIPTS = Path(__file__).parents[1] / "jobs" / "scripts"
TIMEOUT = 30.0


def script(name: str, *args: str) -> StaticCommandHandler:
    return StaticCommandHandler((sys.executable, "-u", str(SCRIPTS / name), *args))


def make_registry() -> JobTypeRegistry:
    """The built-in types plus test-only ones (worker-side configuration, not client commands)."""
    registry = default_registry()
    registry.register("exit-3", script("exit_code.py", "3"))
    registry.register("self-kill", script("self_kill.py"))
    registry.register("sleeper", script("sleeper.py"))
    registry.register("stubborn", script("sleeper.py", "stubborn"))
    registry.register("leaves-child", script("sleeper.py", "exit"))
    registry.register("chatty", script("chatty.py", "3000"))
    registry.register("escaper", script("escaper.py"))
    registry.register("scrubbing-escaper", script("escaper.py", "scrub"))
    registry.register("escaping-sleeper", script("sleeper.py", "stubborn", "escape"))
    return registry


class Recorder:
    """An event sink that records events with their loop time and signals the terminal one."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.times: list[float] = []
        self._terminal = asyncio.Event()
        self._progress = asyncio.Event()

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        self.times.append(asyncio.get_running_loop().time())
        if isinstance(event, TERMINAL_EVENTS):
            self._terminal.set()
        if isinstance(event, RunProgress):
            self._progress.set()

    async def terminal(self) -> TerminalEvent:
        async with asyncio.timeout(TIMEOUT):
            await self._terminal.wait()
        last = self.events[-1]
        assert isinstance(last, TERMINAL_EVENTS)
        return last

    async def first_progress(self) -> RunProgress:
        async with asyncio.timeout(TIMEOUT):
            await self._progress.wait()
        return next(e for e in self.events if isinstance(e, RunProgress))

    def of(self, kind: type) -> list[RunEvent]:
        return [e for e in self.events if isinstance(e, kind)]


def pid_gone(pid: int) -> bool:
    """Independent of the runner's helper: no such pid, or only a zombie is left."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def make_spec(
    tmp_path: Path, job_type: str, config: dict[str, object] | None = None, job_id: str = "j1"
) -> JobSpec:
    workdir = tmp_path / job_id
    (workdir / "inputs").mkdir(parents=True, exist_ok=True)
    return JobSpec(job_id, job_type, dict(config or {}), workdir)
