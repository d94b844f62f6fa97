"""Crash injection for the durability tests: `FSM_WORKER_TEST_KILL_AT=POINT:MESSAGE_TYPE` SIGKILLs the worker.

`after_journal:job_response`: right after the commit of a turn that produced a `job_response`, before it is
sent. `after_send:job_response`: right after the signaling server acknowledged one. Installed through the
host's public hooks (`fsm_worker/worker/hooks.py`) by `tests/scripts/worker_proc.py`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from fsm_worker.protocol.worker.instructions import Instruction, Send
from fsm_worker.worker.hooks import HostHooks

__all__ = ["kill_point_hooks"]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point_hooks(spec: str | None = None) -> HostHooks | None:
    """The hooks that kill the process at the point named by `spec` (default: the environment), or none."""
    spec = os.environ.get("FSM_WORKER_TEST_KILL_AT", "") if spec is None else spec
    point, _, kind = spec.partition(":")
    if point == "after_journal":

        def after_commit(instructions: Sequence[Instruction]) -> None:
            if any(isinstance(i, Send) and kind == i.message.TYPE for i in instructions):
                _die()

        return HostHooks(after_commit=after_commit)
    if point == "after_send":
        return HostHooks(after_delivery=lambda delivered: _die() if delivered == kind else None)
    if point:
        raise ValueError(f"FSM_WORKER_TEST_KILL_AT: unknown point {point!r} (after_journal, after_send)")
    return None
