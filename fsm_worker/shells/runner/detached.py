"""The files of a detached run and how a runner finds the run again (Linux ``/proc``).

A detached run keeps, in ``<workdir>/.run/``: ``stdout.log`` and ``stderr.log`` (the job's output),
``record.json`` (pid and start time of the wrapper and of the job, the process group, the run's
environment tag) and, once the job ended, ``exit.json`` (its return code). Both JSON files are written
atomically (temp file + rename). A pid counts as the recorded process only if its start time in
``/proc/<pid>/stat`` matches, so a reused pid is never taken for the job.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.shells.runner.procgroup import ENV_TAG

RUN_DIR_NAME = ".run"
TAIL_POLL = 0.05


@attrs.frozen
class RunFiles:
    """Paths of one detached run's files under ``directory``."""

    directory: Path

    @classmethod
    def of_workdir(cls, workdir: Path) -> RunFiles:
        return cls(workdir / RUN_DIR_NAME)

    @property
    def stdout(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.directory / "stderr.log"

    @property
    def record(self) -> Path:
        return self.directory / "record.json"

    @property
    def exit(self) -> Path:
        return self.directory / "exit.json"

    @property
    def wrapper_log(self) -> Path:
        """The wrapper's own messages (it cannot start the job, cannot write a log)."""
        return self.directory / "wrapper.log"

    @property
    def channel(self) -> Path:
        """What the job's side channel needs to be opened again (``ReopenableChannel.saved``)."""
        return self.directory / "channel.json"


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` via a synced temp file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) ``pid`` in clock ticks since boot; None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    if fields[0] in {"Z", "X", "x"}:
        return None
    return int(fields[19])


@attrs.frozen
class RunRecord:
    """What ``record.json`` holds: the wrapper and the job process, their group and environment tag."""

    wrapper_pid: int
    wrapper_start: int
    job_pid: int
    job_start: int | None
    pgid: int
    token: str
    started_wall: float

    @classmethod
    def for_processes(cls, job_pid: int) -> RunRecord:
        """The record of the calling wrapper and its child ``job_pid``."""
        pid = os.getpid()
        wrapper_start = process_start_time(pid)
        assert wrapper_start is not None
        return cls(pid, wrapper_start, job_pid, process_start_time(job_pid), os.getpgid(0),
                   os.environ.get(ENV_TAG, ""), time.time())  # fmt: skip

    def write(self, files: RunFiles) -> None:
        write_json_atomically(files.record, attrs.asdict(self))

    @classmethod
    def read(cls, files: RunFiles) -> RunRecord | None:
        """The record, or None if it is absent or unreadable."""
        try:
            data = json.loads(files.record.read_text())
            return cls(**{field.name: data[field.name] for field in attrs.fields(cls)})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def wrapper_alive(self) -> bool:
        """True while the recorded wrapper runs: its pid exists with the recorded start time."""
        return process_start_time(self.wrapper_pid) == self.wrapper_start


def write_exit(files: RunFiles, returncode: int) -> None:
    write_json_atomically(files.exit, {"returncode": returncode, "ended_wall": time.time()})


def read_exit(files: RunFiles) -> int | None:
    """The job's return code from ``exit.json`` (negative: killed by that signal); None if absent."""
    try:
        value = json.loads(files.exit.read_text())["returncode"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return value if isinstance(value, int) else None


async def wait_record(files: RunFiles, wrapper_pid: int) -> RunRecord | None:
    """Wait until the wrapper ``wrapper_pid`` wrote its record (None if it ended without one)."""
    while (record := RunRecord.read(files)) is None or record.wrapper_pid != wrapper_pid:
        if process_start_time(wrapper_pid) is None:
            return None
        await asyncio.sleep(0.005)
    return record


async def wait_exit(record: RunRecord) -> None:
    """Return once the recorded wrapper has ended (pidfd for a pid that is not our child; poll as fallback)."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(record.wrapper_pid)
    except OSError:
        return
    try:
        if not record.wrapper_alive():  # the pid was reused between the check and the open
            return
        ready: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def read_channel(files: RunFiles) -> dict[str, Any] | None:
    """The side channel's saved set-up from ``channel.json``; None if absent or unreadable."""
    try:
        value = json.loads(files.channel.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
