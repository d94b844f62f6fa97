"""Crash injection for the durability tests: `FSM_WORKER_TEST_KILL_AT=POINT:MESSAGE_TYPE` SIGKILLs the worker.

`after_journal:job_response`: right after the commit of a turn that produced a `job_response`, before it is
sent. `after_send:job_response`: right after the signaling server acknowledged one. Read only by tests.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KillPoint"]


class KillPoint:
    """The point named in the environment (or none); `reached(point, kind)` kills the process there."""

    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get("FSM_WORKER_TEST_KILL_AT", "") if spec is None else spec
        self.point, _, self.kind = spec.partition(":")

    def reached(self, point: str, kind: str) -> None:
        if self.point == point and self.kind == kind:
            os.kill(os.getpid(), signal.SIGKILL)
