"""Observation points of the worker host, for embedders and tests; none of them changes what the host does.

`after_commit(instructions)`: with the journal, called once per committed loop turn with the instructions of
all the turn's events in order, after the commit and before any of them is carried out (a process that dies here has
journaled what it had not yet done). `after_delivery(message_type)`: called when the signaling server
acknowledged one of the worker's sends. A hook that raises is logged and ignored. The durability tests use
them to kill the worker at exact points (tests/support/kill_points.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from fsm_worker.protocol.worker.instructions import Instruction

__all__ = ["HostHooks"]


@attrs.frozen
class HostHooks:
    """Optional callbacks of a `WorkerHost` (all default to none)."""

    after_commit: Callable[[Sequence[Instruction]], None] | None = None
    after_delivery: Callable[[str], None] | None = None
