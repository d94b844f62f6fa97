"""Find, signal and reap-wait every process of a run (Linux ``/proc``). Zombies count as gone.

A run's processes are its process group (``start_new_session``) plus any descendant that carries the
run's environment tag (``FSM_WORKER_RUN=<token>``): that also catches descendants that left the
group with ``setsid`` while keeping their environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

ENV_TAG = "FSM_WORKER_RUN"
_PROC = Path("/proc")
_DEAD_STATES = {"Z", "X", "x"}


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0], pgrp is [2])."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in _DEAD_STATES


def _has_tag(pid: int, entry: bytes) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return entry in environ.split(b"\0")


@attrs.frozen
class RunScope:
    """The processes of one run: process group ``pgid`` plus processes tagged with ``token``."""

    pgid: int
    token: str

    @property
    def env(self) -> dict[str, str]:
        """Environment entry to give the run's main process."""
        return {ENV_TAG: self.token}

    def _pgrp_and_tagged(self, pid: int) -> tuple[bool, bool]:
        """(in the group, tagged) for a live process; (False, False) for a zombie or a vanished pid."""
        fields = _stat_fields(pid)
        if fields is None or fields[0] in _DEAD_STATES:
            return False, False
        if int(fields[2]) == self.pgid:
            return True, False
        return False, _has_tag(pid, f"{ENV_TAG}={self.token}".encode())

    def members(self) -> list[int]:
        """Live (non-zombie) processes of the run."""
        pids = (int(item.name) for item in _PROC.iterdir() if item.name.isdigit())
        return [pid for pid in pids if any(self._pgrp_and_tagged(pid))]

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the group and to tagged processes outside it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for pid in self.members():
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)  # pins the process: the tag check below is about this very one
                try:
                    if self._pgrp_and_tagged(pid)[1]:
                        signal.pidfd_send_signal(fd, sig)
                finally:
                    os.close(fd)

    async def wait_gone(self, timeout: float | None = None) -> bool:
        """Poll until no live process of the run is left; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        delay = 0.005
        while self.members():
            if end is not None and loop.time() >= end:
                return False
            await asyncio.sleep(delay if end is None else min(delay, max(0.0, end - loop.time())))
            delay = min(delay * 2, 0.05)
        return True

    async def terminate(self, grace: float) -> None:
        """SIGTERM everything, SIGKILL after ``grace`` seconds, return once every process is gone."""
        self.signal(signal.SIGTERM)
        if not await self.wait_gone(grace):
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL everything and wait until it is gone (re-sending, warning if that takes long)."""
        waited = 0
        while True:
            self.signal(signal.SIGKILL)
            if await self.wait_gone(1.0):
                return
            waited += 1
            if waited % 10 == 0:
                log.warning(
                    "run %s (pgid %d) still has processes %d s after SIGKILL", self.token, self.pgid, waited
                )
