"""The phases of the client's upload sender (:mod:`fsm_worker.protocol.transfer.uploader`): which of them
wait for a reply of the worker (and which frames each accepts), and in which a task of the shell runs."""

from __future__ import annotations

import enum

from fsm_worker.protocol.transfer.frames import Ack, Committed, Frame, Have, Prove, Ready


class Phase(enum.StrEnum):
    """Where the operation in progress is."""

    IDLE = "idle"
    ANNOUNCED = "announced"  # put sent: waiting for ready / have / prove
    PROVING = "proving"  # ComputeProof in flight
    PROVED = "proved"  # proof sent: waiting for ready / have
    CHECKING = "checking"  # HashPrefix in flight (a ready at offset > 0)
    STREAMING = "streaming"  # StreamFile in flight
    ACKING = "acking"  # end sent (or the stream stopped early): waiting for ack
    COMMITTING = "committing"  # commit sent: waiting for committed


WAITS: dict[Phase, tuple[type[Frame], ...]] = {
    Phase.ANNOUNCED: (Ready, Have, Prove),
    Phase.PROVED: (Ready, Have),
    Phase.ACKING: (Ack,),
    Phase.COMMITTING: (Committed,),
}
"""The phases that wait for a reply, and the frames each accepts."""

TASKS = frozenset({Phase.PROVING, Phase.CHECKING, Phase.STREAMING})
"""The phases in which a task of the shell is running."""
